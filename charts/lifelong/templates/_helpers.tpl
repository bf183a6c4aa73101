{{/* Names, labels and the few decisions that more than one template takes. */}}

{{- define "lifelong.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* RELEASE-lifelong, or the release name alone when it already holds the chart name. */}}
{{- define "lifelong.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lifelong.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object of the release carries. */}}
{{- define "lifelong.labels" -}}
helm.sh/chart: {{ include "lifelong.chart" . }}
{{ include "lifelong.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: lifelong
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator pods' identity. `component: operator` keeps it apart from the objects the
operator itself creates for jobs, which carry the same name label. */}}
{{- define "lifelong.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lifelong.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lifelong.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lifelong.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lifelong.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The stage pods' image: the operator's unless set apart. */}}
{{- define "lifelong.stageImage" -}}
{{- if .Values.stageImage.repository }}
{{- printf "%s:%s" .Values.stageImage.repository (default (default .Chart.AppVersion .Values.image.tag) .Values.stageImage.tag) }}
{{- else if .Values.stageImage.tag }}
{{- printf "%s:%s" .Values.image.repository .Values.stageImage.tag }}
{{- else }}
{{- include "lifelong.image" . }}
{{- end }}
{{- end }}

{{/* "true" when replicas elect a leader through Kopf peering. */}}
{{- define "lifelong.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "lifelong.peeringName" -}}
{{- default (include "lifelong.fullname" .) .Values.leaderElection.peeringName }}
{{- end }}

{{/* Refuse combinations that would install an operator that cannot work. */}}
{{- define "lifelong.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: name the namespaces whose AutoDLJobs the operator reconciles, or use rbac.scope=cluster" }}
{{- end }}
{{- end }}

{{/* The permissions the operator uses in every namespace it watches. Each rule names the
calls that need it; tests/deploy/test_rbac.py holds the same table. */}}
{{- define "lifelong.namespacedRules" -}}
# Kopf watches jobs; the reconciler reads each one before acting on it.
- apiGroups: [lifelong.dev]
  resources: [autodljobs]
  verbs: [get, list, watch]
# The reconciler writes a job's status with the resourceVersion it read (a PUT).
- apiGroups: [lifelong.dev]
  resources: [autodljobs/status]
  verbs: [update]
# Versions of a job are listed by label and created from stage results.
- apiGroups: [lifelong.dev]
  resources: [modelversions]
  verbs: [list, create]
# A version's state (Candidate, Canary, Serving, ...) is a status patch.
- apiGroups: [lifelong.dev]
  resources: [modelversions/status]
  verbs: [patch]
# Stage runs are batch Jobs, watched by Kopf, created with deterministic names and suspended
# with their AutoDLJob.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch]
# Stage pods' termination messages carry results; serving pods are scraped for metrics.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# The serving Deployment is watched, read, created and rolled (replaced) on promotion.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update]
# The serving Service is read, created, and replaced when the spec's serving port changes.
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, update]
# The job manifest the stages read is a ConfigMap, replaced when the spec changes.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
# Every autonomous decision is a Kubernetes event on the job.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Kopf's peering kind: cluster-wide for an operator that watches every namespace, else one
object per watched namespace. */}}
{{- define "lifelong.peeringResource" -}}
{{- if empty .Values.watchNamespaces }}clusterkopfpeerings{{ else }}kopfpeerings{{ end }}
{{- end }}

{{/* Leader election: every replica watches the peering objects and patches its keep-alive into
the release's own one; the operator's periodic pass lists the release's one to stand by as Kopf
does. */}}
{{- define "lifelong.peeringRules" -}}
{{- if include "lifelong.leaderElection" . }}
# Leader election: Kopf watches the peering objects and writes its keep-alives into its own.
- apiGroups: [kopf.dev]
  resources: [{{ include "lifelong.peeringResource" . }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ include "lifelong.peeringResource" . }}]
  resourceNames: [{{ include "lifelong.peeringName" . }}]
  verbs: [patch]
{{- end }}
{{- end }}
