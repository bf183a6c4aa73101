-- Argo CD health of an AutoDLJob, read from the kstatus conditions the operator writes.
-- Install: argocd-cm, key resource.customizations.health.lifelong.dev_AutoDLJob (docs/gitops.md).
local hs = {status = "Progressing", message = "Waiting for the operator to reconcile the job."}

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "The job is suspended (spec.suspend)."
  return hs
end

local status = obj.status
if status == nil then
  return hs
end

-- A status computed from an older spec says nothing about the spec in Git yet.
local generation = obj.metadata.generation or 0
if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.message = "The operator has not yet observed generation " .. generation .. "."
  return hs
end

local conditions = {}
for _, condition in ipairs(status.conditions or {}) do
  conditions[condition.type] = condition
end

local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason
  return hs
end

-- Ready means a model serves; an update running beside it does not make the job unhealthy.
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "A model serves predictions."
  return hs
end

local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" and reconciling.message ~= nil then
  hs.message = reconciling.message
elseif ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
end
return hs
