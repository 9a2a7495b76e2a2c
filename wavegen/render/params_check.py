"""Whether a rerun may resume the render a folder holds: its recorded parameters against this command's.

:func:`check_params` names the first binding parameter that differs, as a person reads it (both values as
typed; ``--backend auto`` as typed and as resolved; the numba engine's thread count with what to set; a prime
by its codes' sha256; the guard's settings one by one). Parameters that do not decide the audio
(:data:`NON_BINDING`) may differ; those added after renders were first recorded are taken at their old value
(:data:`ADDED_LATER`) or accepted as they are now (:data:`UNKNOWN_BEFORE`). :mod:`wavegen.render.folder` checks a
folder's params.json and report with it, :mod:`wavegen.render.shard` each snapshot; serve's archive shares
:func:`binding`.
"""

from __future__ import annotations

from pathlib import Path

from wavegen.progress import counted
from wavegen.render.model_change import TENSORS_KEY, model_differs, same_model
from wavegen.render.settings import RenderStateError, rerun_ending

# Parameters recorded but free to change on resume: the audio does not depend on them.
NON_BINDING = ("model", "block_seconds")
# Parameters added after renders were first recorded: their value in a record that lacks them.
ADDED_LATER = {"precision": "fp32", "pitch_sync": 0.0, "postfilter": 0.0}
# Parameters added later whose value a record that lacks them does not tell: accepted as they are now.
UNKNOWN_BEFORE = ("threads", "label_weights")


def check_params(saved: dict, current: dict, where: Path, backend_asked: str | None = None,
                 finished: bool | None = False) -> None:
    """RenderStateError naming the first parameter that differs (NON_BINDING ones may, and
    UNKNOWN_BEFORE ones a record lacks). ``backend_asked``: --backend as typed ("auto"), where it may differ from
    the backend it resolved to (``current["backend"]``): the refusal says both. ``finished``: ``saved`` is a
    finished render's, which a rerun has nothing to resume of (the refusal does not send the user to resume it);
    None where that is not known (:func:`rerun_ending`)."""
    for key in current:
        if key in NON_BINDING or (key in UNKNOWN_BEFORE and key not in saved) or key == TENSORS_KEY:
            continue  # TENSORS_KEY: judged with model_sha256, below
        if key == "label" and "label_weights" in saved:  # the blend binds, not how it is written ("a" = "a:1")
            continue
        before = saved.get(key, ADDED_LATER.get(key))
        if key == "model_sha256" and same_model(saved, current):  # the same tensors, maybe in another file
            continue
        if binding(key, before) == binding(key, current[key]) or key == "seconds" and same_length(saved, current):
            continue
        if key == "threads" and isinstance(before, int) and isinstance(current[key], int):
            raise RenderStateError(_threads_differ(where, before, current[key], finished))
        if key == "model_sha256" and before is not None:
            raise RenderStateError(model_differs(where, saved, current, finished))
        if key == "backend" and backend_asked is not None and backend_asked != current[key]:
            raise RenderStateError(_backend_differs(where, before, backend_asked, current[key], finished))
        if key == "label_weights":  # said as the labels were given
            key, before = "label", saved.get("label")
        raise RenderStateError(f"{where} holds a render {setting_differs(key, before, current[key])}. " + rerun_ending(
            "Rerun the original command to resume it, pass --restart to discard it, or choose another --out", finished,
            rerun="Rerun the original command"))


def same_length(saved: dict, current: dict) -> bool:
    """Whether two records' --seconds give the same samples per stream at the same rate: the audio depends on
    the count alone, so 3960.0000000000005 (an older longform recipe's --hours 1.1) and 3960 are one render."""
    rate = saved.get("sample_rate")
    if not isinstance(rate, int) or rate != current.get("sample_rate"):
        return False
    try:
        return round(float(saved["seconds"]) * rate) == round(float(current["seconds"]) * rate)
    except (KeyError, TypeError, ValueError, OverflowError):  # a damaged record's: it differs, said as it reads
        return False


def binding(key: str, value):
    """What of a recorded parameter a resume must match: the guard's album profile is named by its path
    as typed (run/best/album.json, or /home/.../album.json from another folder), so only whether the
    guard has one binds there; the thresholds it gave bind by their values."""
    if key == "guard" and isinstance(value, dict) and value.get("album_profile"):
        return {**value, "album_profile": True}
    return value


def setting_differs(key: str, before, now) -> str:
    """How parameter ``key`` differs, as a person reads it: "with seconds=2, but this command asks for seconds=4"."""
    if key == "guard" and (before is False or now is False):
        return ("made with --no-guard, but this command runs the guard" if before is False
                else "made with the guard on, but this command asks for --no-guard")
    if key == "prime_sha256" and (before is None or now is None or isinstance(before, str) and isinstance(now, str)):
        return _prime_differs(before, now)
    if isinstance(before, dict) and isinstance(now, dict):
        if key == "guard" and bool(before.get("album_profile")) != bool(now.get("album_profile")):
            profile = before.get("album_profile") or now.get("album_profile")
            return (f"guarded by the album profile {profile}, but this command asks for --no-album-guard"
                    if before.get("album_profile") else
                    f"made with --no-album-guard, but this command guards by the album profile {profile}")
        changed = [k for k in {**before, **now} if before.get(k) != now.get(k)  # only these are shown
                   and not (key == "guard" and k == "album_profile")]  # its path does not bind (binding())
        pairs = {k: _shown_pair(before.get(k, _UNSET), now.get(k, _UNSET)) for k in changed}
        was = ", ".join(f"{k}={a}" for k, (a, _) in pairs.items())
        asked = ", ".join(f"{k}={b}" for k, (_, b) in pairs.items())
        return f"with {key} {was}, but this command asks for {key} {asked}"
    before, now = _shown_pair(before, now)
    return f"with {key}={before}, but this command asks for {key}={now}"


def _prime_differs(before: str | None, now: str | None) -> str:
    """How the prime differs: recorded as the sha256 of its codes (the file's last --prime-seconds)."""
    if before is None:
        return f"made without --prime, but this command gives --prime (its codes' sha256 {now[:12]}...)"
    if now is None:
        return f"begun with --prime (its codes' sha256 {before[:12]}...), but this command gives no --prime"
    return (f"begun with another prime (--prime, or --prime-seconds: its codes' sha256 was {before[:12]}..., this "
            f"command's is {now[:12]}...)")


class _Unset:
    def __repr__(self) -> str:
        return "unset"


_UNSET = _Unset()  # a key one record has and the other lacks


def _shown_pair(before, now) -> tuple[str, str]:
    """Two values that differ, shown as typed; in full where rounding would show them alike."""
    shown = _shown(before), _shown(now)
    return shown if shown[0] != shown[1] else (repr(before), repr(now))


def _shown(value) -> str:
    """A recorded value as it was typed: floats to 6 significant digits (a float32 0.9 reads 0.9), a
    per-stream list by its shortest repeating cycle as a comma list ("0.8,0.9" cycled over the streams)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and value:
        cycle = next(n for n in range(1, len(value) + 1)
                     if all(v == value[i % n] for i, v in enumerate(value)))
        return ",".join(_shown(v) for v in value[:cycle])
    return repr(value)


def _backend_differs(where: Path, before, asked: str, now: str, finished: bool | None) -> str:
    """The refusal of a resume whose --backend (``asked``, as typed: "auto") resolves here to another backend
    (``now``) than the one the render was made with (``before``): another machine, numba or a GPU gone or added.
    ``finished``: the render is, with nothing to resume (:func:`rerun_ending`)."""
    return (f"{where} holds a render made with backend={before!r}, but this command's --backend {asked} runs "
            f"backend={now!r} here; the audio may differ by backend. " + rerun_ending(
                f"Pass --backend {before} to resume it (where it runs), --restart to discard it, or choose another "
                "--out", finished, rerun=f"Pass --backend {before} (where it runs)"))


def _threads_differ(where: Path, before: int, now: int, finished: bool | None) -> str:
    """The refusal of a resume on another thread count (the numba engine's sums round by it). ``finished``: the
    render is, with nothing to resume (:func:`rerun_ending`)."""
    hint = ""
    try:
        import numba

        most = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        most = None
    if most is not None and before > most:
        hint = f" (numba runs at most {counted(most, 'thread')} here: also set NUMBA_NUM_THREADS={before})"
    return (f"{where} holds a render made by the numba engine with threads={before}, but this command runs "
            f"threads={now} (--threads N, or all cores when not given); the engine's sums round by the thread "
            "count, so the audio would differ. " + rerun_ending(
                f"Pass --threads {before} to resume it{hint}, --restart to discard it, or choose another --out",
                finished, rerun=f"Pass --threads {before}{hint}"))
