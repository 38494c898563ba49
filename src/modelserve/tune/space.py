"""The configuration space ``modelserve tune`` searches, and one point of it (`TrialConfig`).

A point is an architecture (``stack``: light gateway workers in front of one model server; ``coupled``: the
model in every worker), a Gunicorn worker class and count, how the gateway calls the model server (REST or
gRPC) and the model server's batching (off, adaptive, or static ``max_batch_size`` + timeout). The coupled
architecture has neither an upstream nor server batching: those fields stay at their defaults there.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = ("stack", "coupled")
WORKER_CLASSES = ("sync", "gthread", "gevent", "asyncio")
UPSTREAMS = ("rest", "grpc")


@dataclass(frozen=True, slots=True)
class Batching:
    """The model server's batching: off, adaptive (no timeout) or static (a timeout)."""

    name: str  # "off", "adaptive", "static-32-2ms" ...: a label for tables and plots
    enabled: bool = True
    max_batch_size: int = 64
    batch_timeout_micros: int | None = None  # None: the adaptive policy
    num_batch_threads: int = 0  # 0: the server's default (cores / intra-op threads)
    pad_variable_length_inputs: bool = True


BATCHING_OFF = Batching("off", enabled=False)
BATCHING_ADAPTIVE = Batching("adaptive")


def static_batching(max_batch_size: int, timeout_micros: int) -> Batching:
    """A static batching variant, named after its settings."""
    return Batching(
        f"static-{max_batch_size}-{timeout_micros / 1000:g}ms",
        max_batch_size=max_batch_size,
        batch_timeout_micros=timeout_micros,
    )


DEFAULT_BATCHING = (BATCHING_ADAPTIVE, BATCHING_OFF, static_batching(32, 2000))


@dataclass(frozen=True, slots=True)
class TrialConfig:
    """One configuration to start and measure."""

    architecture: str = "stack"
    worker_class: str = "sync"
    workers: int = 2
    upstream: str = "rest"
    batching: Batching = BATCHING_ADAPTIVE
    threads: int = 4  # gthread only

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}"
            )
        if self.worker_class not in WORKER_CLASSES:
            raise ValueError(
                f"worker_class must be one of {', '.join(WORKER_CLASSES)}, got {self.worker_class!r}"
            )
        if self.upstream not in UPSTREAMS:
            raise ValueError(f"upstream must be one of {', '.join(UPSTREAMS)}, got {self.upstream!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")

    @property
    def family(self) -> tuple[str, str, str, str]:
        """Everything but the worker count: the points whose worker counts are searched together."""
        return (self.architecture, self.worker_class, self.upstream, self.batching.name)

    @property
    def label(self) -> str:
        """A short human name: ``stack/rest gthread x4 adaptive`` or ``coupled sync x2``."""
        if self.architecture == "coupled":
            return f"coupled {self.worker_class} x{self.workers}"
        return f"stack/{self.upstream} {self.worker_class} x{self.workers} {self.batching.name}"

    @property
    def plan_architecture(self) -> str:
        """The ``architecture`` field ``modelserve plan --from`` reads: stack/rest, stack/grpc or coupled."""
        return "coupled" if self.architecture == "coupled" else f"stack/{self.upstream}"


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The values tune may choose from; the grid is their product (per architecture)."""

    architectures: tuple[str, ...] = ("stack",)
    worker_classes: tuple[str, ...] = WORKER_CLASSES
    coupled_worker_classes: tuple[str, ...] = ("sync",)  # the seed's "typical" deployment
    min_workers: int = 1
    max_workers: int = 16
    upstreams: tuple[str, ...] = UPSTREAMS
    batching: tuple[Batching, ...] = DEFAULT_BATCHING  # the first is tried first
    start_workers: int = 4  # the screening worker count of the stack (coupled: min(2, max))
    threads: int = 4  # threads per gthread worker (the stack's)
    grid_workers: tuple[int, ...] = (1, 2, 4, 8)  # the worker counts of the exhaustive grid

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise ValueError(
                f"need 1 <= min_workers <= max_workers, got {self.min_workers}, {self.max_workers}"
            )
        for name in self.architectures:
            if name not in ARCHITECTURES:
                raise ValueError(f"unknown architecture {name!r}")
        if not self.batching or not self.worker_classes or not self.upstreams:
            raise ValueError("the space needs at least one worker class, upstream and batching variant")

    def clamp(self, workers: int) -> int:
        """``workers`` within the space's bounds."""
        return max(self.min_workers, min(self.max_workers, workers))

    def grid(self) -> list[TrialConfig]:
        """Every configuration of the exhaustive grid (what tune is compared with)."""
        points: list[TrialConfig] = []
        counts = sorted({self.clamp(n) for n in self.grid_workers})
        if "stack" in self.architectures:
            points += [
                TrialConfig("stack", worker_class, workers, upstream, batching, self.threads)
                for upstream in self.upstreams
                for batching in self.batching
                for worker_class in self.worker_classes
                for workers in counts
            ]
        if "coupled" in self.architectures:
            points += [
                TrialConfig("coupled", worker_class, workers)
                for worker_class in self.coupled_worker_classes
                for workers in counts
            ]
        return points
