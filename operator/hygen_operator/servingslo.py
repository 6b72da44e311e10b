"""ServingSLO: reconcile the owned objects, collect the profile, push and retune the budget.

`reconcile` runs on create, spec change and operator start: it validates the spec and makes
the Deployment, Service and profile ConfigMap match it. `sync` runs on a timer: it reads the
pods (profile, control, live metrics), stores a new profile, pushes the budget/QPS and SLO
targets to every ready pod, retunes, and writes status. Both are idempotent.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import kopf
from pydantic import ValidationError

from hygen_operator import manifests
from hygen_operator.conditions import field_errors, now, set_condition
from hygen_operator.kube import CONFIGMAP, DEPLOYMENT, POD, SECRET, SERVICE, Kube
from hygen_operator.pod_client import PodAddress, PodClient, PodError
from hygen_operator.resources import ServingSLOSpec
from hygen_operator.settings import OperatorSettings
from hygen_operator.tuning import TuningRule, retune
from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.metrics import BY_NAME, METRICS
from hygen_pod.contract.profile import OfflineMode, ProfileDocument


@dataclass
class Context:
    """What the handlers share: API clients, settings, and the time of each SLO's last retune."""

    kube: Kube
    pods: PodClient
    settings: OperatorSettings
    rule: TuningRule = field(default_factory=TuningRule)
    last_retune: dict[str, float] = field(default_factory=dict)


def _owner(body: Any) -> dict[str, Any]:
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned(obj: dict[str, Any], body: Any) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [_owner(body)]
    return obj


def targets_text(spec: ServingSLOSpec) -> str:
    return ",".join(f"{m}<{v:g}ms" for m, v in spec.slo.as_metrics().items())


def resolve_mode(wanted: Literal["auto", "budget", "qps"], summary: dict[str, Any]) -> OfflineMode:
    """The offline mode to run: the spec's, or for ``auto`` the one the profile found did
    more offline work within the tolerance (a status profiled before the choice existed
    keeps the budget, the old default)."""
    if wanted != "auto":
        return wanted
    return "qps" if summary.get("bestMode") == "qps" else "budget"


def invalid_status(status: Any, exc: ValidationError, generation: int | None) -> dict[str, Any]:
    msg = field_errors(exc)
    conds = set_condition(
        list(status.get("conditions") or []), "Ready", False, "InvalidSpec", msg, generation
    )
    return with_summary({"phase": "Failed", "conditions": conds, "observedGeneration": generation})


# Waiting reasons that mean a container will not come up without someone acting.
TROUBLE = (
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
)  # fmt: skip


def pod_trouble(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the first pod that cannot run: a container (or init container)
    waiting in a failure state, with its last termination, or a pod the scheduler cannot
    place. None when every pod is fine or merely starting."""
    for p in sorted(pods, key=lambda x: x["metadata"]["name"]):
        name, st = p["metadata"]["name"], p.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                reason = c.get("reason") or "Unschedulable"
                return reason, f"pod {name}: {reason}: {c.get('message') or 'cannot be placed'}"
        for kind, key in (("init container", "initContainerStatuses"),
                          ("container", "containerStatuses")):  # fmt: skip
            for cs in st.get(key) or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason")
                if reason not in TROUBLE:
                    continue
                msg = f"pod {name}: {kind} {cs.get('name')} {reason}"
                last = (cs.get("lastState") or {}).get("terminated") or {}
                if last:
                    how = last.get("message") or last.get("reason") or "terminated"
                    msg += f" (last exit {last.get('exitCode')}: {str(how).strip()[:300]})"
                elif waiting.get("message"):
                    msg += f" ({str(waiting['message'])[:300]})"
                return reason, msg
    return None


def with_summary(st: dict[str, Any]) -> dict[str, Any]:
    """The Ready condition's reason and message copied to status (kubectl get columns)."""
    ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), None)
    if ready is not None:
        st["reason"], st["message"] = ready["reason"], ready.get("message") or None
    return st


async def ready_pods(
    kube: Kube, namespace: str, name: str, spec_hash: str | None = None
) -> list[PodAddress]:
    """Pods of a ServingSLO that are Ready, have an IP and (optionally) run the current spec."""
    return ready_of(await kube.list(POD, namespace, manifests.selector(name)), spec_hash)


def ready_of(pods: list[dict[str, Any]], spec_hash: str | None = None) -> list[PodAddress]:
    """The addresses (admin port) of the Ready pods among ``pods``, by name."""
    out = []
    for p in pods:
        meta, st = p["metadata"], p.get("status") or {}
        if meta.get("deletionTimestamp") or not st.get("podIP"):
            continue
        if not any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in st.get("conditions") or []
        ):
            continue
        if (
            spec_hash
            and (meta.get("annotations") or {}).get(manifests.HASH_ANNOTATION) != spec_hash
        ):
            continue
        # The operator's routes: on the admin port (pods made before it existed: http).
        ports = {
            pt.get("name"): pt["containerPort"]
            for c in p["spec"]["containers"]
            for pt in c.get("ports") or []
        }
        port = ports.get("admin") or ports.get("http")
        if port:
            out.append(PodAddress(meta["name"], st["podIP"], int(port)))
    return sorted(out, key=lambda a: a.name)


async def ensure_token_secret(ctx: Context, ns: str) -> None:
    """The pods' control-token Secret in the ServingSLO's namespace, with the operator's token."""
    name, token = ctx.settings.token_secret, ctx.settings.control_token
    want = base64.b64encode(token.encode()).decode()
    labels = {"app.kubernetes.io/managed-by": "hygen-operator"}
    body = {"metadata": {"name": name, "labels": labels}, "type": "Opaque", "data": {"token": want}}
    have, created = await ctx.kube.ensure(SECRET, ns, body)
    if not created and (have.get("data") or {}).get("token") != want:
        await ctx.kube.patch(SECRET, ns, name, {"data": {"token": want}})


async def reconcile(ctx: Context, body: Any, logger: Any) -> dict[str, Any]:
    """Make the owned objects match the spec; returns the status fields to patch."""
    meta, status = body["metadata"], body.get("status") or {}
    name, ns, gen = meta["name"], meta["namespace"], meta.get("generation")
    try:
        spec = ServingSLOSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        st = invalid_status(status, e, gen)
        kopf.warn(body, reason="InvalidSpec", message=st["conditions"][0]["message"])
        return st
    kube, s = ctx.kube, ctx.settings
    await ensure_token_secret(ctx, ns)
    await kube.ensure(CONFIGMAP, ns, _owned(manifests.profile_configmap(name), body))
    await kube.ensure(SERVICE, ns, _owned(manifests.service(name), body))
    want = _owned(manifests.deployment(name, spec, s, ns), body)
    have, created = await kube.ensure(DEPLOYMENT, ns, want)
    applied = (have["metadata"].get("annotations") or {}).get(manifests.APPLIED_ANNOTATION)
    if not created and applied != want["metadata"]["annotations"][manifests.APPLIED_ANNOTATION]:
        await kube.patch(
            DEPLOYMENT,
            ns,
            name,
            {"metadata": {"annotations": want["metadata"]["annotations"]}, "spec": want["spec"]},
        )
        logger.info("updated Deployment %s (spec hash %s)", name, manifests.spec_hash(spec))
    h = manifests.spec_hash(spec)
    profiled = (status.get("profile") or {}).get("specHash") == h
    conds = set_condition(
        list(status.get("conditions") or []),
        "Profiled",
        profiled,
        "Profiled" if profiled else "Profiling",
        "" if profiled else f"waiting for a pod to profile spec hash {h}",
        gen,
    )
    st: dict[str, Any] = {
        "observedGeneration": gen,
        "targets": targets_text(spec),
        "conditions": conds,
    }
    if spec.replicas == 0:
        st["phase"] = "Idle"
        conds[:] = set_condition(conds, "Ready", False, "ScaledToZero", IDLE_MESSAGE, gen)
    elif not profiled:
        st["phase"] = "Profiling"
        conds[:] = set_condition(conds, "Ready", False, "Profiling", "profiling the engine", gen)
    return with_summary(st)


def _behind_message(profile: ProfileDocument) -> str:
    """The OnlineOverload Event: which profiling slices fell behind, and by how much."""
    worst = min(profile.online_behind, key=lambda b: b.served)
    return (
        f"online work alone fell behind the engine on {len(profile.online_behind)} of "
        f"{profile.slices} profiling slice(s) (worst: {worst.served:.0%} of its tokens served "
        f"by the last arrival, median TTFT x{worst.ttft_growth:.1f} over the replay): the "
        "online load exceeds this pod, so the SLO's reference is itself overloaded; add "
        "replicas or GPU, or lower the load"
    )


IDLE_MESSAGE = "replicas is 0: no pods run; BatchJobs wait until replicas is raised"


async def sync(ctx: Context, body: Any, logger: Any) -> dict[str, Any] | None:
    """One status round: profile, push, observe, retune. Returns the status patch (or None)."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    name, ns, gen = meta["name"], meta["namespace"], meta.get("generation")
    try:
        spec = ServingSLOSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None  # reconcile reported it
    kube = ctx.kube
    h = manifests.spec_hash(spec)
    every = [p for p in await kube.list(POD, ns, manifests.selector(name))
             if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
    pods = ready_of(every, h)
    conds = list(status.get("conditions") or [])
    st: dict[str, Any] = {"readyReplicas": len(pods), "targets": targets_text(spec)}
    if spec.replicas == 0:
        st["phase"] = "Idle"
        st["conditions"] = set_condition(conds, "Ready", False, "ScaledToZero", IDLE_MESSAGE, gen)
        return with_summary(st)
    trouble = pod_trouble(every) if len(pods) < spec.replicas else None
    conds = set_condition(
        conds, "PodsHealthy", trouble is None, trouble[0] if trouble else "Healthy",
        trouble[1] if trouble else f"{len(pods)}/{spec.replicas} pods ready", gen,
    )  # fmt: skip

    # 1. the profile: read (from the ConfigMap, else a pod that ran the current spec) only
    #    when status does not hold it yet; status keeps the numbers tuning needs
    summary = status.get("profile") or {}
    if summary.get("specHash") != h:
        profile = await _current_profile(ctx, ns, name, h, pods, body)
        if profile is None:
            msg = f"{len(pods)} ready pods, none has profiled spec hash {h} yet"
            reason = "Profiling"
            if trouble is not None:  # not profiling at all: say what stops the pods
                reason, msg = trouble[0], f"{trouble[1]}; {msg}"
            st["phase"] = "Profiling" if trouble is None else "Degraded"
            st["conditions"] = set_condition(conds, "Ready", False, reason, msg, gen)
            return with_summary(st)
        mape = profile.predictor.heldout_mape
        summary = {"budgetMs": _round(profile.budget_ms), "qps": _round(profile.qps),
                   "onlinePrefillCap": profile.online_prefill_cap,
                   "qpsOnlinePrefillCap": profile.qps_online_prefill_cap,
                   "yieldToPrompts": profile.yield_to_prompts,
                   "predictorMape": mape, "bestMode": profile.best_mode(),
                   "budgetOfflineTps": round(profile.offline_tps_budget, 1),
                   "qpsOfflineTps": round(profile.offline_tps_qps, 1),
                   "onlineBehindSlices": len(profile.online_behind),
                   "profiledAt": now(), "specHash": h,
                   "configMap": manifests.profile_configmap_name(name)}  # fmt: skip
        status["budgetMs"], status["qps"] = summary["budgetMs"], summary["qps"]  # reset tuning
        kopf.info(body, reason="Profiled",
                  message=f"spec hash {h}: budget {profile.budget_ms:.3g} ms, "
                  f"qps {profile.qps:.3g}, online prefill cap "
                  f"{profile.online_prefill_cap or 'vLLM default'}, "
                  f"predictor MAPE {mape:.1%}; more offline work with "
                  f"{profile.best_mode()} ({profile.offline_tps_budget:.0f} tok/s with the "
                  f"budget, {profile.offline_tps_qps:.0f} with the QPS)")  # fmt: skip
        if profile.online_behind:
            kopf.warn(body, reason="OnlineOverload", message=_behind_message(profile))
    st["profile"] = summary
    mode = resolve_mode(spec.offline_mode, summary)
    st["offlineMode"] = mode
    profiled_value = float(summary["budgetMs"] if mode == "budget" else summary["qps"])
    idle = profiled_value <= 0
    behind = int(summary.get("onlineBehindSlices") or 0)
    conds = set_condition(
        conds, "Profiled", True,
        "OnlineOverload" if behind else "NoOfflineCapacity" if idle else "Profiled",
        f"spec hash {h}"
        + (f"; online work alone fell behind the engine on {behind} profiling slice(s): the "
           "online load exceeds this pod, add replicas or GPU" if behind else "")
        + ("; no offline work fits within the tolerance: offline jobs wait until "
           "retuning finds room or the tolerance is raised" if idle else ""), gen,
    )  # fmt: skip
    held = status.get("budgetMs" if mode == "budget" else "qps")
    value = float(held if held is not None else profiled_value)

    # 2. observe, then retune at most once per retune interval
    observed, online_n, offline_tps = await _observe(ctx, pods)
    targets = spec.slo.as_metrics()
    last = ctx.last_retune.get(meta["uid"], 0.0)
    if pods and time.monotonic() - last >= ctx.settings.retune_interval_s:
        d = retune(value, profiled_value, observed, targets, online_n, ctx.rule)
        ctx.last_retune[meta["uid"]] = time.monotonic()
        if d.changed:
            value = d.value
            kopf.event(body, type="Normal", reason=d.reason, message=f"{mode}: {d.message}")
            logger.info("%s %s: %s", name, d.reason, d.message)
    value = _round(value)
    st["budgetMs" if mode == "budget" else "qps"] = value

    # 3. push the value and the targets to every ready pod
    # the chunking profiled with this mode's setting; retuning moves the value only
    cap = summary.get("onlinePrefillCap" if mode == "budget" else "qpsOnlinePrefillCap")
    st["onlinePrefillCap"] = cap
    control = (
        OfflineControl(
            mode="budget",
            budget_ms=value,
            online_prefill_cap=cap,
            yield_to_prompts=bool(summary.get("yieldToPrompts")),
        )
        if mode == "budget"
        else OfflineControl(mode="qps", qps=value, online_prefill_cap=cap)
    )
    applied, errors = await _push(ctx, pods, control, targets)
    all_applied = bool(pods) and applied == len(pods)
    conds = set_condition(
        conds,
        "BudgetApplied",
        all_applied,
        "Applied" if all_applied else "NotApplied",
        f"{mode} {value:.3g} on {applied}/{len(pods)} ready pods"
        + (f"; {'; '.join(errors)[:300]}" if errors else ""),
        gen,
    )

    # 4. observed metrics and the SLO verdict
    shown = {BY_NAME[m].camel: v for m, v in observed.items() if v is not None}
    st["observed"] = shown or None
    first = next(iter(targets))
    st["observedSummary"] = (
        f"{first} {observed[first]:.1f}ms" if observed.get(first) is not None else None
    )
    st["offlineTokensPerSecond"] = round(offline_tps, 1)
    met = (
        None
        if not online_n
        else all(observed.get(m) is None or observed[m] <= t for m, t in targets.items())
    )
    conds = set_condition(
        conds,
        "SLOMet",
        met,
        "NoTraffic" if met is None else "Met" if met else "Violated",
        ", ".join(
            f"{m} {observed[m]:.1f}/{t:g} ms"
            for m, t in targets.items()
            if observed.get(m) is not None
        ),
        gen,
    )
    ready = all_applied and len(pods) >= spec.replicas and met is not False
    st["phase"] = "Ready" if ready else "Degraded"
    reason = (
        "Ready"
        if ready
        else (
            "SLOViolated"
            if met is False
            else trouble[0]
            if trouble is not None
            else "ReplicasNotReady"
            if len(pods) < spec.replicas
            else "BudgetNotApplied"
        )
    )
    msg = f"{len(pods)}/{spec.replicas} pods ready" + (f"; {trouble[1]}" if trouble else "")
    st["conditions"] = set_condition(conds, "Ready", ready, reason, msg, gen)
    return with_summary(st)


async def _push(
    ctx: Context, pods: list[PodAddress], control: OfflineControl, targets: dict[str, float]
) -> tuple[int, list[str]]:
    """Set the control and SLO targets on every ready pod that differs; returns how many
    pods hold them now and the errors of the others."""
    applied, errors = 0, []
    for pod in pods:
        try:
            view = await ctx.pods.control(pod)
            if view.control != control:
                await ctx.pods.set_offline(pod, control)
            if view.slo_targets_ms != targets:
                await ctx.pods.set_slo(pod, targets)
            applied += 1
        except PodError as e:
            errors.append(str(e))
    return applied, errors


def _round(v: float) -> float:
    """Budgets (ms) and rates as people read them: 4 significant digits."""
    return float(f"{v:.4g}")


async def _current_profile(
    ctx: Context, ns: str, name: str, h: str, pods: list[PodAddress], body: Any
) -> ProfileDocument | None:
    cm_name = manifests.profile_configmap_name(name)
    cm = await ctx.kube.get(CONFIGMAP, ns, cm_name)
    raw = ((cm or {}).get("data") or {}).get(manifests.PROFILE_KEY)
    if raw:
        doc = ProfileDocument.model_validate_json(raw)
        if doc.spec_hash == h:
            return doc
    for pod in pods:
        try:
            doc = await ctx.pods.profile(pod)
        except PodError:
            continue
        if doc is not None and doc.spec_hash == h:
            data = {manifests.PROFILE_KEY: doc.model_dump_json(indent=1)}
            if cm is None:
                await ctx.kube.ensure(
                    CONFIGMAP, ns, _owned({**manifests.profile_configmap(name), "data": data}, body)
                )
            else:
                await ctx.kube.patch(CONFIGMAP, ns, cm_name, {"data": data})
            return doc
    return None


async def _observe(
    ctx: Context, pods: list[PodAddress]
) -> tuple[dict[str, float | None], int, float]:
    """Worst value of each metric over the pods, online requests, summed offline tokens/s."""
    worst: dict[str, float | None] = dict.fromkeys(METRICS)
    online_n, offline_tps = 0, 0.0
    for pod in pods:
        try:
            m = await ctx.pods.metrics(pod)
        except PodError:
            continue
        online_n += m.online.requests
        offline_tps += m.offline.tokens_per_s
        for k in worst:
            v = getattr(m.online, BY_NAME[k].ms_field)
            if v is not None:
                worst[k] = max(worst[k] or 0.0, v)
    return worst, online_n, offline_tps
