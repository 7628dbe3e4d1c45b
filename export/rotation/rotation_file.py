"""The rotation artifact: learned R1/R2 plus the recipe that produced them, validated against
the checkpoint it is folded into.

Format (torch.save of a plain dict, loadable with weights_only=True):
    format "handheld-rotations", version 1
    r1: [dim, dim] float32          r2: [n_layers, head_dim, head_dim] float32
    model: {dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size}
    probe: [PROBE_ROWS, PROBE_COLS] float32, a corner of the original embedding table, so a
           file learned on another checkpoint of the same shape is refused
    recipe: dict (RotationRecipe fields), history: dict (losses, seconds, device)
Stored in float32 and re-orthogonalised in float64 on load (nearest orthogonal matrix, U V^T).
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.errors import HandheldError

FORMAT = "handheld-rotations"
VERSION = 1
PROBE_ROWS, PROBE_COLS = 16, 16
PROBE_RTOL = 2e-2  # same checkpoint read via another dtype/format still matches
ORTHO_TOL = 1e-3  # stored fp32 rotations must be orthogonal to this before re-orthogonalising
SHIPPED = {"smollm2-135m": Path(__file__).parent / "weights" / "smollm2_spinquant.pt"}
MODEL_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size")


def model_signature(model) -> dict:
    return {k: int(getattr(model.args, k)) for k in MODEL_KEYS}


def embedding_probe(model) -> torch.Tensor:
    """A corner of the *original* (unrotated) embedding table."""
    return model.embed_tokens.weight.detach()[:PROBE_ROWS, :PROBE_COLS].float().clone()


def nearest_orthogonal(r: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(r.double())
    return u @ vh


def save_rotation_file(
    path: str | Path, r1: torch.Tensor, r2: list[torch.Tensor], model, recipe: dict, history: dict
) -> Path:
    """`model` is the original checkpoint model (for the signature and probe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "r1": r1.detach().float().contiguous(),
        "r2": torch.stack([r.detach().float() for r in r2]).contiguous(),
        "model": model_signature(model),
        "probe": embedding_probe(model),
        "recipe": recipe,
        "history": history,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def _bad(path, problem: str) -> HandheldError:
    return HandheldError(
        f"rotation file {path} {problem}",
        "learn rotations for this checkpoint with `handheld learn-rotations --checkpoint PATH --out FILE`, "
        "or export with --rotation quarot (random Hadamard, needs no file)",
    )


def _read(path: Path) -> dict:
    if not path.is_file():
        raise _bad(path, "does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        raise _bad(path, f"cannot be read ({type(err).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise _bad(path, f"is not a {FORMAT} file")
    if blob.get("version") != VERSION:
        raise _bad(path, f"has version {blob.get('version')}, this Handheld reads version {VERSION}")
    if not all(isinstance(blob.get(k), torch.Tensor) for k in ("r1", "r2", "probe")) or not isinstance(
        blob.get("model"), dict
    ):
        raise _bad(path, "lacks r1, r2, probe or model")
    return blob


def check_rotation_file(path: str | Path) -> None:
    """The file's own shape, before any checkpoint loads (the CLI's early check)."""
    _read(Path(path))


def load_rotation_file(path: str | Path, model) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
    """-> (R1 [dim, dim] float64, [R2 [head_dim, head_dim] float64] per layer, the raw blob).

    `model` is the original (unrotated) Llama the rotations will be folded into."""
    path = Path(path)
    blob = _read(path)
    want, got = model_signature(model), blob.get("model", {})
    diff = {k: (got.get(k), want[k]) for k in MODEL_KEYS if got.get(k) != want[k]}
    if diff:
        shown = ", ".join(f"{k}: file {a} vs checkpoint {b}" for k, (a, b) in diff.items())
        raise _bad(path, f"was learned for another architecture ({shown})")
    r1, r2 = blob["r1"], blob["r2"]
    if tuple(r1.shape) != (want["dim"],) * 2 or tuple(r2.shape) != (
        want["n_layers"],
        want["head_dim"],
        want["head_dim"],
    ):
        raise _bad(path, f"holds rotations of shapes {tuple(r1.shape)} and {tuple(r2.shape)}")
    probe = embedding_probe(model)
    if not torch.allclose(blob["probe"], probe, rtol=PROBE_RTOL, atol=PROBE_RTOL * float(probe.abs().mean())):
        raise _bad(path, "was learned on a different checkpoint (embedding weights differ)")
    for name, r in [("R1", r1)] + [(f"R2[{i}]", r) for i, r in enumerate(r2)]:
        err = float((r.double() @ r.double().T - torch.eye(r.shape[0], dtype=torch.float64)).abs().max())
        if err > ORTHO_TOL:
            raise _bad(path, f"holds a non-orthogonal {name} (|R R^T - I| = {err:.2e})")
    return nearest_orthogonal(r1), [nearest_orthogonal(r) for r in r2], blob
