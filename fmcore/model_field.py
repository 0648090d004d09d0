r"""A trained network as a field: any prediction type, any clock, scored like the exact field.

``ModelField(model, schedule, prediction, convention)`` wraps a network ``model(time, x)`` — an ``nn.Module`` or any
callable — that predicts the velocity, the noise ε̂, the data x̂₁ or v (:mod:`fmcore.predictions`) on its own clock
and coordinates (:mod:`fmcore.conventions`), and gives it the interface every sampler and metric takes (that of
:class:`~fmcore.fields.AnalyticField`): ``field(t, x)`` the velocity at our time t, ``.score``, ``.data_prediction``,
``.noise_prediction``, ``.velocity_and_score``, ``.dim``, ``.schedule``, ``.dtype``.

Each quantity is evaluated on its own interval of times (``field.clip``): ``t_eps`` in from an end where its
conversion divides by a quantity the schedule sets to zero there, and inside the noise levels the network knows.
Outside it the field answers at the interval's nearest end (an O(t_eps) error in a first or last step, never inf or
NaN).

The dimension is the ``dim`` given, or that of the first ``x`` the field is called with (then fixed: another
dimension later is an error). A network wrapped in a function that works in its own layout (an image network on
``x.view(n, C, H, W)``) is the user's to write; the field only ever passes ``(n, d)`` tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._checks import as_time, check_instance, check_int, check_number, check_samples
from .conventions import PathTime, TimeConvention
from .predictions import Conversion, Prediction, get_prediction
from .schedules import Schedule

__all__ = ["ModelField", "TrainedNetwork"]

COMPUTE_DTYPES = (None, torch.bfloat16, torch.float16)


class ModelField:
    """A network ``model(time, x)`` predicting ``prediction`` in ``convention`` along ``schedule``, as a field.

    ``compute_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs the network under ``torch.autocast`` in that
    precision while the state and the conversions stay in ``x``'s dtype."""

    def __init__(
        self,
        model,
        schedule: Schedule,
        prediction: str | Prediction,
        convention: TimeConvention | None = None,
        dim: int | None = None,
        t_eps: float = 1e-3,
        compute_dtype: torch.dtype | None = None,
    ):
        if not callable(model):
            raise TypeError(f"model must be callable as model(time, x) (an nn.Module or a function), got "
                            f"{type(model).__name__}")
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        if convention is not None:
            check_instance("convention", convention, TimeConvention, "PathTime(), DDPMTimesteps(...) or NoiseLevel()")
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be None, torch.bfloat16 or torch.float16, got {compute_dtype!r}")
        self.prediction = get_prediction(prediction)
        self.convention = convention or PathTime()
        self._dim = None if dim is None else check_int("dim", dim)
        self.t_eps = check_number("t_eps", t_eps, 0.0, 0.5, low_open=True, high_open=True)
        self.compute_dtype = compute_dtype
        self.model = model.eval() if isinstance(model, nn.Module) else model
        parameters = list(model.parameters())[:1] if isinstance(model, nn.Module) else []
        self._first_parameter = parameters[0] if parameters else None  # read per call for .dtype
        self.schedule = schedule
        prediction = self.prediction
        self._conversion_of = {"velocity": prediction.to_velocity, "score": prediction.to_score,
                               "data": prediction.to_data, "noise": prediction.to_noise}
        ends = (float(schedule(0.0).alpha) == 0.0, float(schedule(1.0).sigma) == 0.0)  # α_0 = 0, σ_1 = 0
        known = self.convention.time_range(schedule, self.t_eps)
        self.clip = {name: self._interval(conversion, ends, known) for name, conversion in self._conversion_of.items()}

    def _interval(self, conversion: Conversion, ends: tuple[bool, bool], known: tuple[float, float]) -> tuple[float, float]:
        """Where ``conversion`` is evaluated: inside its own regular interval (given which of α_0, σ_1 vanish) and
        the convention's ``known`` time range."""
        low, high = conversion.interval(*ends, self.t_eps)
        low, high = max(low, known[0]), min(high, known[1])
        if low > high:
            raise ValueError(f"the network's noise levels ({self.convention!r}) and the conversions of its "
                             f"{self.prediction!r} leave no time of {self.schedule!r} to evaluate at")
        return low, high

    @property
    def dim(self) -> int | None:
        """The dimension: given, or that of the first call's ``x`` (None before it)."""
        return self._dim

    @property
    def dtype(self) -> torch.dtype | None:
        """The network's dtype (its first parameter's; ``model.to(...)`` converts it in place), None for a function."""
        return None if self._first_parameter is None else self._first_parameter.dtype

    def _checked_input(self, x: Tensor) -> None:
        check_samples("x", x, self._dim)
        if self._dim is None:
            self._dim = int(x.shape[1])  # the first call fixes the dimension
        if self.dtype is not None and x.dtype != self.dtype:
            raise ValueError(f"x has dtype {x.dtype} but the model computes in {self.dtype}")

    def _network(self, t, x: Tensor, interval: tuple[float, float]) -> tuple[Tensor, Tensor]:
        self._checked_input(x)
        if isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0:
            t = min(max(float(t), interval[0]), interval[1])  # clip the number itself: no clamp kernel per call
            t_tensor = as_time(t, like=x)
        else:
            t_tensor = as_time(t, like=x, n=x.shape[0]).clamp(*interval)
        output = self._forward(t_tensor, x)
        if not isinstance(output, Tensor) or output.shape != x.shape:
            got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"the model returned {got}; the field needs {tuple(x.shape)} (one prediction per point)")
        return t_tensor, output

    def _forward(self, t: Tensor, x: Tensor) -> Tensor:
        """The network at our ``(t, x)``, called in its own convention."""
        time, model_x = self.convention.network_inputs(self.schedule, t, x)
        if self.compute_dtype is None:
            return self.model(time, model_x)
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            output = self.model(time, model_x)
        return output.to(x.dtype)

    def _convert(self, conversion: Conversion, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        if conversion.formula is None:  # the network predicts this already: no schedule values needed
            return output
        return conversion(self.schedule.values(t), x, output)

    def _quantity(self, name: str, t, x: Tensor) -> Tensor:
        t_tensor, output = self._network(t, x, self.clip[name])
        return self._convert(self._conversion_of[name], t_tensor, x, output)

    def __call__(self, t, x: Tensor) -> Tensor:
        """The velocity :math:`u_t(x)`."""
        return self._quantity("velocity", t, x)

    def score(self, t, x: Tensor) -> Tensor:
        """:math:`\\nabla\\log p_t(x)`."""
        return self._quantity("score", t, x)

    def data_prediction(self, t, x: Tensor) -> Tensor:
        """:math:`E[x_1 | x_t = x]`."""
        return self._quantity("data", t, x)

    def noise_prediction(self, t, x: Tensor) -> Tensor:
        """:math:`E[\\varepsilon | x_t = x]`."""
        return self._quantity("noise", t, x)

    def velocity_and_score(self, t, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both from one network pass (one NFE), at t clipped to the intersection of the two intervals."""
        (velocity_low, velocity_high), (score_low, score_high) = self.clip["velocity"], self.clip["score"]
        t_tensor, output = self._network(t, x, (max(velocity_low, score_low), min(velocity_high, score_high)))
        values = self.schedule.values(t_tensor)
        return self.prediction.to_velocity(values, x, output), self.prediction.to_score(values, x, output)

    def velocity_unchecked(self, t: Tensor, x: Tensor) -> Tensor:
        """The velocity with no validation and no host synchronisation: ``t`` a 0-d tensor of ``x``'s dtype and
        device in [0, 1], ``x`` a finite ``(n, d)`` tensor of the model's dtype. For CUDA graphs and
        ``torch.compile``; nothing checks the input (see :meth:`fmcore.targets.GaussianMixture.velocity_unchecked`)."""
        t_points = t.clamp(*self.clip["velocity"]).expand(x.shape[0])
        return self._convert(self.prediction.to_velocity, t_points, x, self._forward(t_points, x))

    def fingerprint(self) -> str:
        """The prediction type and the convention (the network's own identity is its owner's to record)."""
        return f"{self.prediction.name}:{self.convention.fingerprint()}"

    def __repr__(self) -> str:
        return f"ModelField({self.prediction.name}, {self.convention!r}, {self.schedule!r}, dim={self.dim})"


@dataclass(frozen=True)
class TrainedNetwork:
    """A user's trained network and how to read it: what a ``field = "module:…"`` factory returns.

    ``network(time, x)`` predicts ``prediction`` (a name of :data:`~fmcore.predictions.PREDICTION_TYPES` or a
    :class:`~fmcore.predictions.Prediction`) in ``convention`` (default :class:`~fmcore.conventions.PathTime`);
    ``dim`` as in :class:`ModelField`. :meth:`field` makes it a field along any schedule."""

    network: object
    prediction: str | Prediction
    convention: TimeConvention | None = None
    dim: int | None = None

    def __post_init__(self):
        if not callable(self.network):
            raise TypeError(f"network must be callable as network(time, x), got {type(self.network).__name__}")
        object.__setattr__(self, "prediction", get_prediction(self.prediction))
        if self.convention is None:
            object.__setattr__(self, "convention", PathTime())
        check_instance("convention", self.convention, TimeConvention, "PathTime(), DDPMTimesteps(...) or NoiseLevel()")

    def field(self, schedule: Schedule, t_eps: float = 1e-3, compute_dtype: torch.dtype | None = None) -> ModelField:
        """The network as a field along ``schedule``."""
        return ModelField(self.network, schedule, self.prediction, self.convention, self.dim, t_eps, compute_dtype)

    def fingerprint(self) -> str:
        """A hash of the prediction type, the convention and, for an ``nn.Module``, every parameter and buffer: a
        retrained or edited network gets another one (a plain function only its name)."""
        digest = hashlib.sha256(f"{self.prediction.name}|{self.convention.fingerprint()}|{self.dim}".encode())
        if isinstance(self.network, nn.Module):
            for name, tensor in self.network.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(getattr(self.network, "__qualname__", type(self.network).__name__).encode())
        return digest.hexdigest()[:16]
