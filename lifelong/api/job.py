"""The `AutoDLJob` resource: what a user writes, applies with kubectl and keeps in git.

A job declares the data, the search, the training, the serving and the lifelong-learning
policy; the operator (or `lifelong run` on a laptop) does the rest. Every optional field has a
default that the code applies when it reads the spec; the CRD itself sets no defaults, so the
object in the cluster stays identical to the one in git.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from lifelong.api.base import API_VERSION, ApiModel, Condition, ObjectMeta, cel
from lifelong.api.types import (
    DNS_LABEL_PATTERN,
    Duration,
    PositiveDuration,
    Quantity,
    duration_seconds,
)

URI_PATTERN = r"^(file|s3|gs|gcs|az|abfs|https?|memory|builtin)://.+$"
"""A data or storage location: a URI whose scheme Lifelong can read through fsspec."""

MAX_JOB_NAME = 45
"""Longest job name: children are named `NAME-search`, `NAME-update-N`, ... within 63."""

TaskType = Literal["classification", "regression"]
Metric = Literal["accuracy", "balancedAccuracy", "f1", "logLoss", "rmse", "mae", "r2"]
Mode = Literal["max", "min"]
StrategyName = Literal["random", "asha", "tpe", "evolution", "pbt"]
UpdateStrategyName = Literal["replay", "ewc", "lwf", "finetune"]
DetectorType = Literal["adwin", "kswin", "page-hinkley", "ddm", "eddm", "hddm-a", "hddm-w"]
Aggregate = Literal["avg", "min", "max", "last", "sum", "rate", "increase"]
Family = Literal["mlp", "cnn"]
Activation = Literal["relu", "gelu", "tanh", "silu"]
Normalization = Literal["none", "batch", "layer"]
KernelSize = Literal[3, 5]
Pooling = Literal["max", "avg", "none"]
Optimizer = Literal["adam", "adamw", "sgd"]
Augmentation = Literal["none", "noise", "shift"]

METRIC_MODES: dict[str, Mode] = {
    "accuracy": "max",
    "balancedAccuracy": "max",
    "f1": "max",
    "logLoss": "min",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
}
"""The direction in which each task metric improves."""


# --- task and data -------------------------------------------------------------------------


class TaskSpec(ApiModel):
    """What to learn. Every field is optional: what is left out is inferred from the data."""

    type: TaskType | None = None
    """`classification` or `regression`. Default: inferred from the target column."""

    target: str | None = Field(default=None, min_length=1, max_length=253)
    """The column to predict. Default: `label`, `target`, `y` or `class` if present, else the
    last column."""

    metric: Metric | None = None
    """The quality metric that search and gates optimise. Default: `accuracy` for
    classification, `rmse` for regression."""

    mode: Mode | None = None
    """Whether the metric is maximised or minimised. Default: the metric's natural direction."""


class DataSource(ApiModel):
    """A table of examples at a URI."""

    uri: str = Field(pattern=URI_PATTERN, max_length=2048)
    """Where the data lives: `file://`, `s3://`, `gs://`, `https://`, or `builtin://NAME` for a
    data set that ships with an installed package (`builtin://digits`, `builtin://phishing`)."""

    format: Literal["auto", "csv", "parquet", "npz"] = "auto"
    """The file format. Default: `auto`, from the file's extension."""


class StreamSource(DataSource):
    """The live stream the serving stage consumes: each record is predicted, then its label
    arrives as feedback after `labelDelay` records."""

    order: Literal["as-is", "shuffled", "class-incremental", "permuted"] = "as-is"
    """How records are ordered. `class-incremental` brings classes in groups (the train stage
    sees only the first group); `permuted` applies a new fixed feature permutation in each
    phase. Default: `as-is`."""

    phases: int = Field(default=2, ge=1, le=100)
    """For `class-incremental` and `permuted`: how many phases the stream has. Default: 2."""

    revisit: bool = True
    """For `class-incremental`: end with a phase that mixes every class seen. Default: true."""

    fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    """When the stream and the training data share a URI, the fraction of records kept apart
    for the stream; the rest is training data. Default: 0.5."""

    label_delay: int = Field(default=10, ge=0, le=1_000_000)
    """How many records later each record's label arrives as feedback. Default: 10."""

    rate: float = Field(default=1.0, gt=0.0, le=100_000.0)
    """Records per second of stream time. The local runner uses it for its virtual clock; a
    cluster replays the stream at this rate. Default: 1."""

    limit: int | None = Field(default=None, ge=1)
    """Stop after this many records. Default: the whole stream."""


class DataSpec(ApiModel):
    """Where the training data and the live stream come from, and how the data is split."""

    train: DataSource
    """The data the search and the first model are trained on."""

    stream: StreamSource | None = None
    """The live stream served after training. Without it, serving waits for HTTP traffic."""

    validation_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    """Fraction of the training data held out for validation during search. Default: 0.15."""

    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    """Fraction of the training data held out for the final test. Default: 0.15."""

    seed: int = Field(default=0, ge=0)
    """Seed of every random split and shuffle, recorded in each model version. Default: 0."""


# --- search --------------------------------------------------------------------------------


class Objective(ApiModel):
    """One quantity the search optimises."""

    metric: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64)
    """A task metric (`accuracy`, `rmse`, ...), `latencyMs` (measured inference time per
    example), `params` (model size) or `energyJ` (estimated inference energy)."""

    mode: Mode
    """`max` or `min`."""


class IntRange(ApiModel):
    """An integer range searched uniformly, or log-uniformly when `log` is true."""

    min: int = Field(ge=0)
    """Smallest value, included."""

    max: int = Field(ge=0)
    """Largest value, included."""

    log: bool = False
    """Sample on a log scale. Default: false."""

    model_config = cel(
        ("self.min <= self.max", "min must not exceed max"),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class FloatRange(ApiModel):
    """A real range searched uniformly, or log-uniformly when `log` is true."""

    min: float
    """Smallest value."""

    max: float
    """Largest value."""

    log: bool = False
    """Sample on a log scale; both ends must then be above zero. Default: false."""

    model_config = cel(
        ("self.min <= self.max", "min must not exceed max"),
        ("!self.log || self.min > 0.0", "a log range needs min > 0"),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if self.log and self.min <= 0:
            raise ValueError(f"a log range needs min > 0, got {self.min}")
        return self


class MLPSpace(ApiModel):
    """The multilayer-perceptron family: a stack of dense blocks."""

    depth: IntRange = Field(default_factory=lambda: IntRange(min=1, max=3))
    """Number of hidden layers. Default: 1 to 3."""

    width: IntRange = Field(default_factory=lambda: IntRange(min=32, max=256, log=True))
    """Units per hidden layer. Default: 32 to 256, log scale."""

    activation: list[Activation] = Field(default=["relu", "gelu"], min_length=1, max_length=4)
    """Activation functions to choose from. Default: relu, gelu."""

    dropout: FloatRange = Field(default_factory=lambda: FloatRange(min=0.0, max=0.3))
    """Dropout probability after each hidden layer. Default: 0 to 0.3."""

    normalization: list[Normalization] = Field(
        default=["none", "layer"], min_length=1, max_length=3
    )
    """Normalisation layers to choose from. Default: none, layer."""


class CNNSpace(ApiModel):
    """The convolutional family, for inputs with an image shape (such as digits' 8x8)."""

    stages: IntRange = Field(default_factory=lambda: IntRange(min=1, max=2))
    """Number of convolutional stages. Default: 1 to 2."""

    channels: IntRange = Field(default_factory=lambda: IntRange(min=8, max=32, log=True))
    """Channels of the first stage; each later stage doubles them. Default: 8 to 32."""

    kernel_size: list[KernelSize] = Field(default=[3], min_length=1, max_length=2)
    """Convolution kernel sizes to choose from. Default: 3."""

    pooling: list[Pooling] = Field(default=["max", "avg"], min_length=1, max_length=3)
    """Pooling after each stage. Default: max, avg."""

    skip: list[bool] = Field(default=[False, True], min_length=1, max_length=2)
    """Whether stages have residual (skip) connections. Default: both."""


class SearchSpace(ApiModel):
    """Architecture families and hyperparameter ranges searched together."""

    families: list[Family] = Field(default=["mlp"], min_length=1, max_length=2)
    """Architecture families to search. `cnn` needs image-shaped inputs. Default: mlp."""

    mlp: MLPSpace = Field(default_factory=MLPSpace)
    """Ranges of the MLP family."""

    cnn: CNNSpace = Field(default_factory=CNNSpace)
    """Ranges of the CNN family."""

    optimizer: list[Optimizer] = Field(default=["adam", "adamw"], min_length=1, max_length=3)
    """Optimisers to choose from. Default: adam, adamw."""

    learning_rate: FloatRange = Field(
        default_factory=lambda: FloatRange(min=1e-4, max=3e-2, log=True)
    )
    """Learning rate. Default: 1e-4 to 3e-2, log scale."""

    weight_decay: FloatRange = Field(
        default_factory=lambda: FloatRange(min=1e-6, max=1e-2, log=True)
    )
    """Weight decay. Default: 1e-6 to 1e-2, log scale."""

    batch_size: list[int] = Field(default=[32, 64, 128], min_length=1, max_length=8)
    """Batch sizes to choose from. Default: 32, 64, 128."""

    augmentation: list[Augmentation] = Field(default=["none"], min_length=1, max_length=3)
    """Training-time augmentations to choose from: `noise` adds Gaussian noise to inputs,
    `shift` moves images by one pixel. Default: none."""


class Budget(ApiModel):
    """Limits the search never exceeds."""

    trials: int = Field(default=24, ge=1, le=10_000)
    """Configurations to evaluate. Default: 24."""

    parallelism: int = Field(default=2, ge=1, le=1_000)
    """Trials running at once. Default: 2."""

    max_epochs: int = Field(default=20, ge=1, le=10_000)
    """Epochs of the longest trial (full fidelity). Default: 20."""

    min_epochs: int = Field(default=1, ge=1, le=10_000)
    """Epochs every trial gets before early stopping may end it (ASHA's grace period).
    Default: 1."""

    timeout: PositiveDuration = "30m"
    """Wall-clock limit of the whole search, such as `15m`. Default: 30m."""

    max_retries: int = Field(default=1, ge=0, le=10)
    """Times a failed trial is retried before it is counted as failed. Default: 1."""

    model_config = cel(
        (
            "!has(self.parallelism) || !has(self.trials) || self.parallelism <= self.trials",
            "parallelism must not exceed trials",
        ),
        (
            "!has(self.minEpochs) || !has(self.maxEpochs) || self.minEpochs <= self.maxEpochs",
            "minEpochs must not exceed maxEpochs",
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.parallelism > self.trials:
            raise ValueError(
                f"parallelism ({self.parallelism}) must not exceed trials ({self.trials})"
            )
        if self.min_epochs > self.max_epochs:
            raise ValueError(
                f"minEpochs ({self.min_epochs}) must not exceed maxEpochs ({self.max_epochs})"
            )
        return self

    @property
    def timeout_seconds(self) -> float:
        return duration_seconds(self.timeout)


class SearchSpec(ApiModel):
    """Neural architecture search and hyperparameter optimisation, run together."""

    strategy: StrategyName = "asha"
    """`random`, `asha` (multi-fidelity early stopping), `tpe`, `evolution` (regularised
    evolution) or `pbt` (population-based training). Default: asha."""

    objectives: list[Objective] = Field(default_factory=list, max_length=4)
    """What the search optimises; the first is the primary objective. Default: the task
    metric alone."""

    selection: Literal["primary", "knee"] = "primary"
    """How the winner is picked from the Pareto front: `primary` takes the best primary
    objective and breaks near-ties (within `tolerance`) by the other objectives in order;
    `knee` takes the front's point closest to the ideal. Default: primary."""

    tolerance: float = Field(default=0.005, ge=0.0, le=1.0)
    """With `selection: primary`, how close to the best primary value counts as a tie.
    Default: 0.005."""

    budget: Budget = Field(default_factory=Budget)
    """Trials, parallelism, epochs and wall time."""

    space: SearchSpace = Field(default_factory=SearchSpace)
    """The architecture families and hyperparameter ranges."""

    ray_address: str | None = Field(default=None, max_length=512)
    """Address of a Ray cluster (for example a KubeRay head, `ray://head:10001`). Default: a
    local Ray inside the stage's pod."""


# --- training and serving ------------------------------------------------------------------


class Resources(ApiModel):
    """Compute requested for each pod of a stage."""

    cpu: Quantity = "1"
    """CPU cores, as a Kubernetes quantity (`500m`, `2`). Default: 1."""

    memory: Quantity = "2Gi"
    """Memory, as a Kubernetes quantity (`512Mi`, `4Gi`). Default: 2Gi."""

    gpu: int = Field(default=0, ge=0, le=64)
    """`nvidia.com/gpu` devices. Default: 0."""


class EnvVar(ApiModel):
    """An environment variable set in a stage's containers."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=253)
    """The variable's name."""

    value: str = Field(default="", max_length=32_768)
    """Its value."""


FreeForm = dict[str, Any]


class PodTemplate(ApiModel):
    """Overrides merged into the pods of a stage."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pods must match."""

    tolerations: list[FreeForm] = Field(
        default_factory=list, json_schema_extra={"x-lifelong-free-form": True}
    )
    """Kubernetes tolerations, as in a pod spec."""

    affinity: FreeForm | None = Field(
        default=None, json_schema_extra={"x-lifelong-free-form": True}
    )
    """A Kubernetes affinity, as in a pod spec."""

    priority_class_name: str | None = Field(default=None, max_length=253)
    """The pods' priority class."""

    service_account_name: str | None = Field(default=None, max_length=253)
    """The service account the pods run as. Default: the namespace's default."""

    queue_name: str | None = Field(default=None, max_length=63)
    """A Kueue local queue; set as the `kueue.x-k8s.io/queue-name` label."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Extra pod labels."""

    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra pod annotations."""

    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    """Extra environment variables."""

    volumes: list[FreeForm] = Field(
        default_factory=list, json_schema_extra={"x-lifelong-free-form": True}
    )
    """Extra volumes, as in a pod spec."""

    volume_mounts: list[FreeForm] = Field(
        default_factory=list, json_schema_extra={"x-lifelong-free-form": True}
    )
    """Extra volume mounts for the stage's container, as in a container spec."""


class TrainingSpec(ApiModel):
    """Full-fidelity training of the search's winner, and the pods of the batch stages."""

    workers: int = Field(default=1, ge=1, le=1_000)
    """Data-parallel workers (Ray Train). Default: 1."""

    epochs: int | None = Field(default=None, ge=1, le=10_000)
    """Training epochs. Default: the search budget's `maxEpochs`."""

    resources: Resources = Field(default_factory=Resources)
    """Compute per pod (search, train and update stages)."""

    image: str | None = Field(default=None, max_length=1024)
    """Container image of the stages. Default: the operator's configured image."""

    template: PodTemplate = Field(default_factory=PodTemplate)
    """Placement and pod overrides for the batch stages."""


class DetectorSpec(ApiModel):
    """A drift detector watching the serving model's error stream or its inputs."""

    type: DetectorType
    """`adwin`, `kswin`, `page-hinkley`, `ddm`, `eddm`, `hddm-a` or `hddm-w`."""

    name: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN, max_length=63)
    """Name used in metrics and events. Default: the type."""

    input: Literal["error", "features"] = "error"
    """What the detector watches: the 0/1 (or absolute) prediction error, or each input's mean
    absolute z-score against the training data. The DDM family (`ddm`, `eddm`, `hddm-a`,
    `hddm-w`) needs 0/1 values, so it watches the error of a classifier only. Default: error."""

    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Confidence parameter (ADWIN, Page-Hinkley, HDDM)."""

    threshold: float | None = Field(default=None, gt=0.0)
    """Detection threshold (Page-Hinkley)."""

    alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Significance level (KSWIN) or forgetting factor (Page-Hinkley)."""

    window_size: int | None = Field(default=None, ge=10, le=100_000)
    """Sliding window length (KSWIN)."""

    min_instances: int | None = Field(default=None, ge=1, le=100_000)
    """Observations before the detector may fire."""

    warning_threshold: float | None = Field(default=None, gt=0.0)
    """Warning level (DDM, EDDM)."""

    drift_threshold: float | None = Field(default=None, gt=0.0)
    """Drift level (DDM, EDDM)."""


class AdaptationSpec(ApiModel):
    """Online adaptation of the served model between updates, from the labels that arrive as
    feedback. The stored model version never changes: a restart keeps the adapted state, and an
    update starts again from the stored version."""

    mode: Literal["none", "head"] = "none"
    """`none` serves the version as stored; `head` takes a gradient step on the output layer
    for each label, with a small rehearsal batch from the memories, and grows it for classes
    never seen before. Default: none."""

    learning_rate: float = Field(default=0.1, gt=0.0, le=10.0)
    """Step size of the head's online updates. Default: 0.1."""

    rehearsal: int = Field(default=16, ge=0, le=1_024)
    """Examples drawn from the recent and replay memories into each online step, so the head
    does not forget older classes. Default: 16."""


class ServingSpec(ApiModel):
    """The online serving stage: predictions, delayed feedback, drift detection, metrics."""

    replicas: int = Field(default=1, ge=0, le=1_000)
    """Serving replicas. Default: 1. Each replica keeps its own online windows and matches
    feedback only to its own predictions, and the replicas' saved memories are not merged yet
    (the last to save wins): online learning wants one replica."""

    port: int = Field(default=8080, ge=1, le=65_535)
    """HTTP port of the serving API and its `/metrics`. Default: 8080."""

    window: int = Field(default=200, ge=10, le=1_000_000)
    """Records in the sliding window of online (prequential) metrics. Default: 200."""

    recent_memory: int = Field(default=1000, ge=10, le=10_000_000)
    """Labelled records kept for the next update. Default: 1000."""

    detectors: list[DetectorSpec] = Field(
        default_factory=lambda: [DetectorSpec(type="adwin")], max_length=16
    )
    """Drift detectors. Default: one ADWIN on the error stream."""

    adaptation: AdaptationSpec = Field(default_factory=AdaptationSpec)
    """Online adaptation of the served model from feedback. Default: off."""

    resources: Resources = Field(default_factory=Resources)
    """Compute per serving pod."""

    template: PodTemplate = Field(default_factory=PodTemplate)
    """Placement and pod overrides for the serving pods."""


# --- lifelong learning ---------------------------------------------------------------------


class TriggerSpec(ApiModel):
    """A condition over serving metrics that starts an update. Either structured (`metric`,
    `window`, `aggregate` and one of `above` or `below`) or a raw `promql` expression that
    fires when it returns any sample."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """Name of the trigger, recorded with every update it starts."""

    metric: str | None = Field(default=None, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", max_length=200)
    """A Prometheus metric of the serving stage, such as `lifelong_online_accuracy`."""

    window: Duration | None = None
    """The range the aggregate looks back over, such as `2m`. Default: 2m."""

    aggregate: Aggregate | None = None
    """How samples in the window are combined: avg, min, max, last, sum, rate or increase.
    Default: avg."""

    above: float | None = None
    """Fire when the aggregate is above this value."""

    below: float | None = None
    """Fire when the aggregate is below this value."""

    for_: Duration | None = Field(default=None, alias="for")
    """How long the condition must hold before the trigger fires. Default: 0s."""

    promql: str | None = Field(default=None, min_length=1, max_length=4096)
    """A PromQL expression; the trigger fires while it returns at least one sample. Needs a
    Prometheus URL (`spec.lifelong.prometheus.url` or the operator's setting)."""

    model_config = cel(
        (
            "has(self.metric) != has(self.promql)",
            "set exactly one of metric (a structured trigger) or promql",
        ),
        (
            "!has(self.metric) || (has(self.above) != has(self.below))",
            "a structured trigger needs exactly one of above or below",
        ),
        (
            "!has(self.promql) || (!has(self.window) && !has(self.aggregate) "
            "&& !has(self.above) && !has(self.below))",
            "a promql trigger takes no window, aggregate, above or below",
        ),
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.metric is None) == (self.promql is None):
            raise ValueError("set exactly one of metric (a structured trigger) or promql")
        if self.metric is not None and (self.above is None) == (self.below is None):
            raise ValueError("a structured trigger needs exactly one of above or below")
        if self.promql is not None and any(
            v is not None for v in (self.window, self.aggregate, self.above, self.below)
        ):
            raise ValueError("a promql trigger takes no window, aggregate, above or below")
        return self

    @property
    def structured(self) -> bool:
        return self.metric is not None


class UpdateSpec(ApiModel):
    """How an incremental update trains a candidate from the serving model."""

    strategy: UpdateStrategyName = "replay"
    """`replay` (recent data plus a replay memory of older data), `ewc` (elastic weight
    consolidation), `lwf` (learning without forgetting) or `finetune` (recent data only, the
    baseline). Default: replay."""

    memory_size: int = Field(default=500, ge=0, le=10_000_000)
    """Examples of older data kept in the class-balanced replay memory. Default: 500."""

    epochs: int = Field(default=15, ge=1, le=10_000)
    """Epochs of each update. Default: 15."""

    learning_rate: float | None = Field(default=None, gt=0.0, le=10.0)
    """Learning rate of the update. Default: the serving model's."""

    min_samples: int = Field(default=50, ge=1, le=10_000_000)
    """Labelled recent examples needed before an update can start. Default: 50."""

    ewc_lambda: float = Field(default=100.0, ge=0.0)
    """Strength of the EWC penalty. Default: 100."""

    lwf_alpha: float = Field(default=1.0, ge=0.0)
    """Weight of the LwF distillation loss. Default: 1."""

    search_trials: int = Field(default=0, ge=0, le=1_000)
    """Trials of a small warm-started search around the serving configuration before the
    update; 0 skips it. Default: 0."""


class GateSpec(ApiModel):
    """The promotion gate: a candidate replaces the serving model only if it passes."""

    min_gain: float = Field(default=0.0, ge=-1.0, le=1.0)
    """Least improvement of the metric on held-out recent data. Default: 0."""

    max_forgetting: float = Field(default=0.05, ge=0.0, le=1.0)
    """Largest drop of the metric on held-out old data. Default: 0.05."""

    holdout_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    """Fraction of recent and of old data held out for the gate. Default: 0.3."""


class CanarySpec(ApiModel):
    """Gradual promotion: the candidate serves a growing share of traffic first."""

    steps: list[int] = Field(default_factory=list, max_length=10)
    """Traffic percentages of the canary, in order, such as [10, 50]. Empty promotes at once.
    Default: empty."""

    min_samples: int = Field(default=50, ge=1, le=10_000_000)
    """Labelled canary predictions needed at each step before it is judged. Default: 50."""

    tolerance: float = Field(default=0.02, ge=0.0, le=1.0)
    """How far the canary's online metric may fall below the serving model's before it is
    rolled back. Default: 0.02."""


class PrometheusSpec(ApiModel):
    """Where triggers are evaluated."""

    url: str | None = Field(default=None, pattern=r"^https?://.+$", max_length=2048)
    """Base URL of a Prometheus server. Default: the operator's setting; without one,
    structured triggers are evaluated from the serving pods' own metrics."""

    interval: PositiveDuration = "30s"
    """How often triggers are evaluated. Default: 30s."""


class LifelongSpec(ApiModel):
    """What happens after deployment: triggers, updates, the gate, canaries, storm control."""

    triggers: list[TriggerSpec] = Field(default_factory=list, max_length=32)
    """Conditions that start an update."""

    update: UpdateSpec = Field(default_factory=UpdateSpec)
    """How an update trains its candidate."""

    gate: GateSpec = Field(default_factory=GateSpec)
    """The promotion gate."""

    canary: CanarySpec = Field(default_factory=CanarySpec)
    """Canary steps before full promotion."""

    cooldown: Duration = "10m"
    """Least time between the end of one update and the start of the next. Default: 10m."""

    max_updates: int = Field(default=10, ge=0, le=100_000)
    """Updates allowed over the job's life; 0 disables updates. Default: 10."""

    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    """Where triggers are evaluated."""

    model_config = cel(
        (
            "!has(self.triggers) || self.triggers.all(t, "
            "self.triggers.exists_one(u, u.name == t.name))",
            "trigger names must be unique",
        ),
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [t.name for t in self.triggers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"trigger names must be unique; repeated: {', '.join(duplicates)}")
        return self


class StorageSpec(ApiModel):
    """The artifact store: model versions, trial logs, memories and reports."""

    uri: str = Field(pattern=URI_PATTERN, max_length=2048)
    """A directory URI (`file:///data/lifelong`, `s3://bucket/prefix`). Default: the
    operator's setting, or `./runs` under `lifelong run`."""


class AutoDLJobSpec(ApiModel):
    """The desired state of an automated deep-learning job."""

    task: TaskSpec = Field(default_factory=TaskSpec)
    """What to learn; inferred from the data where left out."""

    data: DataSpec
    """Training data and live stream."""

    search: SearchSpec = Field(default_factory=SearchSpec)
    """Architecture and hyperparameter search."""

    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Full-fidelity training and the batch stages' pods."""

    serving: ServingSpec = Field(default_factory=ServingSpec)
    """Online serving and drift detection."""

    lifelong: LifelongSpec = Field(default_factory=LifelongSpec)
    """Triggers, updates, the gate and canaries."""

    storage: StorageSpec | None = None
    """The artifact store. Default: the operator's setting."""

    suspend: bool = False
    """Pause the job: running stages are suspended (their pods stop; resumed, they go on from
    what they saved), no new stage starts and serving scales to zero. Default: false."""


# --- status --------------------------------------------------------------------------------

Phase = Literal["Pending", "Searching", "Training", "Serving", "Updating", "Suspended", "Failed"]


class UpdateCounts(ApiModel):
    """How the job's updates ended so far."""

    total: int = Field(default=0, ge=0)
    """Updates started."""

    promoted: int = Field(default=0, ge=0)
    """Candidates that passed the gate (and canary) and now serve or served."""

    rejected: int = Field(default=0, ge=0)
    """Candidates the gate rejected."""

    rolled_back: int = Field(default=0, ge=0)
    """Candidates rolled back during their canary."""

    failed: int = Field(default=0, ge=0)
    """Updates whose stage failed."""


class Decision(ApiModel):
    """One autonomous decision, kept in a short most-recent-first list."""

    time: str
    """When it was taken, RFC 3339."""

    reason: str = Field(max_length=64)
    """The event reason, such as `TriggerFired` or `CandidateRejected`."""

    message: str = Field(max_length=1024)
    """What was decided and on what evidence."""


class TriggerState(ApiModel):
    """Where one trigger stands."""

    name: str = Field(max_length=63)
    """The trigger's name."""

    active_since: str | None = None
    """Since when its condition has held, RFC 3339; empty while it does not hold."""

    clear_since: str | None = None
    """Since when its condition has not held, RFC 3339."""

    latched: bool = False
    """True after it started an update, until it re-arms."""

    value: float | None = None
    """The last value of its expression."""

    suppressed: str | None = Field(default=None, max_length=256)
    """Why its last firing started no update (cooldown, budget, an update running)."""


class AutoDLJobStatus(ApiModel):
    """The observed state of a job, written by the operator. Bounded: every trial, prediction
    and decision beyond the last few lives in the artifact store."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this status reflects."""

    phase: Phase | None = None
    """A one-word summary: Pending, Searching, Training, Serving, Updating, Suspended or
    Failed."""

    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    """`Ready`, `Reconciling` and `Stalled` (kstatus), plus stage conditions."""

    metric: str | None = Field(default=None, max_length=64)
    """The primary metric's name."""

    score: float | None = None
    """The serving version's primary metric on its test data."""

    serving_version: str | None = Field(default=None, max_length=253)
    """The `ModelVersion` that serves."""

    canary_version: str | None = Field(default=None, max_length=253)
    """The `ModelVersion` under canary, if any."""

    canary_weight: int | None = Field(default=None, ge=0, le=100)
    """The canary's share of traffic in percent."""

    versions: int = Field(default=0, ge=0)
    """Model versions created so far."""

    best: dict[str, float] = Field(default_factory=dict)
    """The serving version's objectives."""

    updates: UpdateCounts = Field(default_factory=UpdateCounts)
    """How updates ended so far."""

    active_update: str | None = Field(default=None, max_length=253)
    """The update stage now running, if any."""

    last_trigger: str | None = Field(default=None, max_length=63)
    """The trigger that fired last."""

    last_trigger_time: str | None = None
    """When it fired, RFC 3339."""

    last_update_end_time: str | None = None
    """When the last update finished, RFC 3339; the cooldown counts from here."""

    stage_attempts: dict[str, int] = Field(default_factory=dict)
    """Runs of the current stage that failed, by stage; names the next run (`-r1`, `-r2`)."""

    stage_failures: dict[str, int] = Field(default_factory=dict)
    """Failures of the current stage since the spec last changed; retries stop at the limit."""

    next_attempt_time: str | None = None
    """When a failed stage may be tried again, RFC 3339 (retry with backoff)."""

    canary_step: int | None = Field(default=None, ge=0, le=10)
    """Index of the current canary step in `spec.lifelong.canary.steps`."""

    canary_step_start: int | None = Field(default=None, ge=0)
    """The canary's labelled predictions when the current step began."""

    triggers: list[TriggerState] = Field(default_factory=list, max_length=32)
    """Each trigger's latch, for hysteresis: a trigger fires once, then re-arms only after its
    condition has been false for a while."""

    recent_decisions: list[Decision] = Field(default_factory=list, max_length=10)
    """The last autonomous decisions, newest first."""

    message: str | None = Field(default=None, max_length=1024)
    """A sentence on what the job is doing or waiting for."""


class AutoDLJob(ApiModel):
    """An automated deep-learning job: search, train, serve, and keep improving."""

    api_version: Literal["lifelong.dev/v1alpha1"] = API_VERSION
    """Always `lifelong.dev/v1alpha1`."""

    kind: Literal["AutoDLJob"] = "AutoDLJob"
    """Always `AutoDLJob`."""

    metadata: ObjectMeta
    """Standard object metadata."""

    spec: AutoDLJobSpec
    """The desired state."""

    status: AutoDLJobStatus | None = None
    """The observed state, written by the operator."""

    model_config = cel(
        (
            f"size(self.metadata.name) <= {MAX_JOB_NAME}",
            f"metadata.name must be at most {MAX_JOB_NAME} characters so that child names fit",
        )
    )

    @model_validator(mode="after")
    def _short_name(self) -> Self:
        if len(self.metadata.name) > MAX_JOB_NAME:
            raise ValueError(
                f"metadata.name {self.metadata.name!r} has {len(self.metadata.name)} characters; "
                f"at most {MAX_JOB_NAME} are allowed so that child names such as "
                "NAME-update-12 stay valid"
            )
        return self
