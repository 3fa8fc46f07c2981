"""Live health checks: turn the logged diagnostics into WARNING lines and `health/*` scalars.

Read-only, like every diagnostic: the rules see only numbers the monitor already measured.

Rules and their thresholds (the numbers are module constants, so tests and docs quote them):

* Normalization violated. A variant that claims to normalize holds a per-layer sigma at 1:
  `naive`, `reshaped` and `builtin` the reshaped kernel's (`sigma/matrix/<layer>`), `operator` the
  convolution's (`sigma/operator/<layer>`). One power step per update lags the weights, so a
  correct variant reads above 1 now and then, in one layer at a time and for one reading (measured
  on the embedded default, log.every=1: single readings up to 1.36 for `reshaped` and 1.57 for
  `operator`, mostly in the first steps); the naive recipe's excess is in every layer and never
  goes away (from its first reading: conv1 1.39-1.61, the other convs 1.17-1.45). So D's
  normalization counts as violated at a reading when the geometric mean of the claimed sigmas
  over its layers (the per-layer share of the product SN promises to hold at 1) exceeds GM_LIMIT
  (1.2; correct variants measured at most 1.19, at their first step, the naive recipe 1.19-1.25 at
  step 1 and at least 1.205 from step 2), or when one layer exceeds SIGMA_LIMIT (1.35) at two
  readings in a row. Each layer above GM_LIMIT then warns, once; it warns again only after growing
  by SIGMA_WORSE (x1.25) over the value it last warned at.
* Collapse suspected. On sample quality (`metrics/clean_rate` of the embedded data's oracle,
  higher is better; `metrics/fid` on real data, lower is better): the quality ratio is
  current / best (clean_rate) or best / current (FID). Collapse when the run's best clean_rate
  reached CLEAN_RATE_FLOOR (0.1) and the ratio falls below COLLAPSE_RATIO (0.3); for FID when the
  ratio falls below FID_COLLAPSE_RATIO (0.5: FID more than twice its best). One warning per
  episode; a recovery above the ratio is logged as such.
* Lipschitz growing. `sigma/lipschitz_bound` (product of the layers' operator norms) and
  `lipschitz/grad_norm`, each against the smallest value the run has logged: a warning when the
  bound is at its running maximum and at least LIPSCHITZ_GROWTH (10x) its minimum, and again at
  every further 10x. The gradient norm's growth is logged beside it.

`Health` runs the three rules in that order, each a small class that owns its own state (which
travels in checkpoints: `Health.state_dict` is the three rules' fields side by side), and `replay`
runs them over a finished run's logged values, as the seed study's report does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

GM_LIMIT = 1.2
SIGMA_LIMIT = 1.35
SIGMA_WORSE = 1.25
CLEAN_RATE_FLOOR = 0.1
COLLAPSE_RATIO = 0.3
FID_COLLAPSE_RATIO = 0.5
LIPSCHITZ_GROWTH = 10.0

# Which logged sigma each variant claims to hold at 1.
CLAIMED_SIGMA = {"naive": "sigma/matrix/", "reshaped": "sigma/matrix/", "builtin": "sigma/matrix/",
                 "operator": "sigma/operator/"}


class _Rule:
    """What the rules share: their dataclass fields (the variant aside) are their saved state."""

    PAIRS: tuple[str, ...] = ()  # tuple fields, which a checkpoint may hand back as lists

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "variant"}

    def load_state_dict(self, state: dict) -> None:
        """Take the fields `state` holds; other keys belong to the other rules."""
        for key in self.state_dict():
            if key in state:
                value = state[key]
                setattr(self, key, tuple(value) if isinstance(value, list) and key in self.PAIRS else value)


@dataclass
class NormalizationRule(_Rule):
    """Normalization violated: the sigmas the variant claims to hold at 1, per layer."""

    PAIRS = ("worst_sigma",)
    variant: str
    warned_sigma: dict[str, float] = field(default_factory=dict)   # layer -> sigma it last warned at
    first_violation: int | None = None                              # step of the first sigma warning
    worsenings: list[int] = field(default_factory=list)              # steps of repeat warnings (a layer x1.25)
    previous_sigma: dict[str, float] = field(default_factory=dict)   # layer -> sigma at the last reading
    worst_sigma: tuple[float, str, int] = (0.0, "", 0)               # (sigma, layer, step)

    def check(self, step: int, values: dict[str, float]) -> tuple[dict[str, float], list[str]]:
        prefix = CLAIMED_SIGMA.get(self.variant)
        sigmas = {tag[len(prefix):]: v for tag, v in values.items() if tag.startswith(prefix)} if prefix else {}
        if not sigmas:
            return {}, []
        layer, worst = max(sigmas.items(), key=lambda kv: kv[1])
        positive = [max(s, 1e-12) for s in sigmas.values()]
        geo_mean = math.exp(sum(map(math.log, positive)) / len(positive))
        persistent = [name for name, s in sigmas.items()
                      if not s <= SIGMA_LIMIT and not self.previous_sigma.get(name, 0.0) <= SIGMA_LIMIT]
        self.previous_sigma = dict(sigmas)
        violated = not geo_mean <= GM_LIMIT or bool(persistent)  # NaN violates
        scalars = {"health/claimed_sigma_max": worst, "health/claimed_sigma_geo_mean": geo_mean,
                   "health/normalization_violated": float(violated)}
        if not worst <= self.worst_sigma[0]:
            self.worst_sigma = (worst, layer, step)
        if not violated:
            return scalars, []
        offending = sorted((n for n, s in sigmas.items() if not s <= GM_LIMIT or n in persistent),
                           key=lambda n: -sigmas[n])
        kind = "operator norm" if prefix == "sigma/operator/" else "reshaped-kernel sigma"
        return scalars, self._warn(step, {n: sigmas[n] for n in offending}, kind, geo_mean)

    def _warn(self, step: int, offending: dict[str, float], kind: str, geo_mean: float) -> list[str]:
        """One line per offending layer (worst first) that never warned or grew by SIGMA_WORSE since."""
        warnings = []
        for name, sigma in offending.items():
            last = self.warned_sigma.get(name)
            if last is not None and sigma <= last * SIGMA_WORSE:
                continue
            self.warned_sigma[name] = sigma
            if self.first_violation is None:
                self.first_violation = step
            if last is not None and (not self.worsenings or self.worsenings[-1] != step):
                self.worsenings.append(step)
            again = f" (was {last:.2f} at its last warning)" if last is not None else ""
            warnings.append(
                f"step {step}: normalization violated: {name}'s {kind} is {sigma:.2f}{again} where "
                f"variant={self.variant} promises 1 (geometric mean over D's layers {geo_mean:.2f}, limit "
                f"{GM_LIMIT}): D is not held to the Lipschitz bound spectral normalization should give")
        return warnings

    def summary(self) -> str | None:
        if self.variant not in CLAIMED_SIGMA:
            return None
        sigma, layer, step = self.worst_sigma
        if self.warned_sigma:
            return (f"normalization violated from step {self.first_violation} in "
                    f"{len(self.warned_sigma)} layer(s), worst {layer} {sigma:.2f} at step {step}")
        return f"normalization held (largest claimed sigma {sigma:.2f} at step {step})"


@dataclass
class CollapseRule(_Rule):
    """Collapse suspected: sample quality against the run's best (clean_rate, else FID)."""

    PAIRS = ("best_quality",)
    best_quality: tuple[float, int] | None = None                    # (clean_rate or FID, step)
    collapsed_at: int | None = None                                  # step the current episode began
    collapses: list[int] = field(default_factory=list)               # steps of every episode's start

    def check(self, step: int, values: dict[str, float]) -> tuple[dict[str, float], list[str]]:
        if "metrics/clean_rate" in values:
            current, higher_better, name = values["metrics/clean_rate"], True, "clean_rate"
        elif "metrics/fid" in values:
            current, higher_better, name = values["metrics/fid"], False, "FID"
        else:
            return {}, []
        if not math.isfinite(current):
            return {}, []
        best = self.best_quality
        if best is None or (current > best[0] if higher_better else current < best[0]):
            self.best_quality = best = (current, step)
        if higher_better:
            ratio = current / best[0] if best[0] > 0 else 1.0
            collapsed = best[0] >= CLEAN_RATE_FLOOR and ratio < COLLAPSE_RATIO
        else:
            ratio = best[0] / current if current > 0 else 1.0
            collapsed = ratio < FID_COLLAPSE_RATIO
        scalars = {"health/quality_vs_best": ratio, "health/collapse_suspected": float(collapsed)}
        if collapsed and self.collapsed_at is None:
            self.collapsed_at = step
            self.collapses.append(step)
            return scalars, [f"step {step}: collapse suspected: {name} {current:.3g} against the run's best "
                             f"{best[0]:.3g} at step {best[1]}: G has lost most of what it had learned"]
        if not collapsed and self.collapsed_at is not None:
            self.collapsed_at = None
            return scalars, [f"step {step}: recovered from the collapse: {name} back to {current:.3g} "
                             f"(best {best[0]:.3g})"]
        return scalars, []

    def summary(self) -> str | None:
        if self.collapses:
            now = "still collapsed" if self.collapsed_at is not None else "recovered"
            return (f"collapse suspected at step(s) {', '.join(map(str, self.collapses))} ({now}; "
                    f"best {self.best_quality[0]:.3g} at step {self.best_quality[1]})")
        if self.best_quality is not None:
            return f"no collapse (best {self.best_quality[0]:.3g} at step {self.best_quality[1]})"
        return None


@dataclass
class LipschitzRule(_Rule):
    """Lipschitz growing: the bound (and, beside it, the gradient norm) against its smallest value."""

    lipschitz_min: float | None = None
    lipschitz_max: float = 0.0
    lipschitz_warned: float = 0.0                                    # growth it last warned at
    grad_norm_min: float | None = None

    def check(self, step: int, values: dict[str, float]) -> tuple[dict[str, float], list[str]]:
        bound, grad = values.get("sigma/lipschitz_bound"), values.get("lipschitz/grad_norm")
        scalars = {}
        if grad is not None and grad > 0 and math.isfinite(grad):
            self.grad_norm_min = grad if self.grad_norm_min is None else min(self.grad_norm_min, grad)
            scalars["health/grad_norm_growth"] = grad / self.grad_norm_min
        if bound is None or not (bound > 0 and math.isfinite(bound)):
            return scalars, []
        self.lipschitz_min = bound if self.lipschitz_min is None else min(self.lipschitz_min, bound)
        rising = bound >= self.lipschitz_max
        self.lipschitz_max = max(self.lipschitz_max, bound)
        growth = bound / self.lipschitz_min
        growing = rising and growth >= LIPSCHITZ_GROWTH
        scalars["health/lipschitz_growth"] = growth
        scalars["health/lipschitz_growing"] = float(growing)
        if not (growing and growth >= max(LIPSCHITZ_GROWTH, self.lipschitz_warned * LIPSCHITZ_GROWTH)):
            return scalars, []
        self.lipschitz_warned = growth
        grad_part = (f", lipschitz/grad_norm {grad:.3g} ({grad / self.grad_norm_min:.1f}x its minimum)"
                     if grad is not None and self.grad_norm_min else "")
        return scalars, [f"step {step}: Lipschitz bound growing: sigma/lipschitz_bound {bound:.3g} is "
                         f"{growth:.0f}x the run's smallest ({self.lipschitz_min:.3g}) and still rising"
                         f"{grad_part}: nothing holds D's Lipschitz constant"]

    def summary(self) -> str | None:
        if self.lipschitz_min is None:
            return None
        growth = self.lipschitz_max / self.lipschitz_min
        return (f"Lipschitz bound {'growing' if self.lipschitz_warned else 'bounded'} "
                f"(max {self.lipschitz_max:.3g}, {growth:.1f}x its minimum)")


def _rule_field(rule: str, name: str) -> property:
    """`Health.<name>`: the field of that name of the rule that owns it."""
    return property(lambda self: getattr(getattr(self, rule), name),
                    lambda self, value: setattr(getattr(self, rule), name, value))


class Health:
    """The health rules for one run. `check` takes one reading of logged scalars and returns the
    `health/*` scalars for it plus the warning lines to log; `state_dict` travels in checkpoints so
    that a resumed run neither repeats its warnings nor forgets its best quality."""

    warned_sigma = _rule_field("normalization", "warned_sigma")
    first_violation = _rule_field("normalization", "first_violation")
    worsenings = _rule_field("normalization", "worsenings")
    previous_sigma = _rule_field("normalization", "previous_sigma")
    worst_sigma = _rule_field("normalization", "worst_sigma")
    best_quality = _rule_field("collapse", "best_quality")
    collapsed_at = _rule_field("collapse", "collapsed_at")
    collapses = _rule_field("collapse", "collapses")
    lipschitz_min = _rule_field("lipschitz", "lipschitz_min")
    lipschitz_max = _rule_field("lipschitz", "lipschitz_max")
    lipschitz_warned = _rule_field("lipschitz", "lipschitz_warned")
    grad_norm_min = _rule_field("lipschitz", "grad_norm_min")

    def __init__(self, variant: str):
        self.variant = variant
        self.normalization = NormalizationRule(variant)
        self.collapse = CollapseRule()
        self.lipschitz = LipschitzRule()

    @property
    def rules(self) -> tuple[NormalizationRule, CollapseRule, LipschitzRule]:
        """The rules in the order they run and their warnings are logged."""
        return self.normalization, self.collapse, self.lipschitz

    def check(self, step: int, values: dict[str, float]) -> tuple[dict[str, float], list[str]]:
        scalars: dict[str, float] = {}
        warnings: list[str] = []
        for rule in self.rules:
            rule_scalars, rule_warnings = rule.check(step, values)
            scalars.update(rule_scalars)
            warnings.extend(rule_warnings)
        return scalars, warnings

    def summary(self) -> str:
        """One line: what the run's health checks found."""
        parts = [part for part in (rule.summary() for rule in self.rules) if part is not None]
        return "health: " + ("; ".join(parts) if parts else "nothing measured")

    def state_dict(self) -> dict:
        return {key: value for rule in self.rules for key, value in rule.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        for rule in self.rules:
            rule.load_state_dict(state)


def replay(variant: str, readings: dict[int, dict[str, float]]) -> Health:
    """The rules over a finished run's logged values ({step: {tag: value}}, in step order), in the
    order the trainer applies them: at each step the diagnostics (`sigma/*`, `lipschitz/*`) first,
    then the sample-quality metrics (`metrics/*`)."""
    health = Health(variant)
    for step, values in readings.items():
        diagnostics = {k: v for k, v in values.items() if k.startswith(("sigma/", "lipschitz/"))}
        quality = {k: v for k, v in values.items() if k.startswith("metrics/")}
        if diagnostics:
            health.check(step, diagnostics)
        if quality:
            health.check(step, quality)
    return health
