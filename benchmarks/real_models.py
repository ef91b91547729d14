"""A real-size model, Captum's tutorial methods: the whole CLI audit against Captum and bare floors.

    python benchmarks/real_models.py [--images 4] [--size 224] [--skip-cli]
    python benchmarks/real_models.py --memory [--size 64] [--samples 64 1024]

torchvision's resnet18 with random weights (nothing is downloaded) at 224 px, 4 images, and the
tutorial's methods: occlusion with a 3x45x45 window and 3x9x9 strides, IG with 50 Gauss-Legendre
steps, and GradCAM on ``layer4``. In one run, side by side:

* the whole ``mlflow-xai audit`` command (a subprocess: imports, model load from a sqlite store,
  preflight, methods, report, artifacts, logging), with its peak RSS;
* the same methods called through Captum directly, batched well (perturbations per pass, IG's
  ``internal_batch_size``);
* the floors: a batched forward loop over the occluded images, a batched forward+backward loop over
  IG's interpolated points, and GradCAM's one forward+backward;
* ``import torch, captum, mlflow`` plus the model load in a fresh process, against the CLI's wall
  time less its methods' and figures' seconds (start-up, preflight, report and logging).

The floors and Captum run twice, taking turns, and the second round is reported. Run it on an
otherwise idle machine: the CLI runs once, as a whole process.

``--memory`` runs an IG + occlusion audit of the same architecture at ``--size`` on each probe size
in a fresh process and prints the peak RSS of each: memory should not grow with the probe set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

OCCLUSION = {"sliding_window_shapes": [3, 45, 45], "strides": [3, 9, 9], "baseline": 0.0}
IG_STEPS = 50
# Interpolated images per pass, on every side: what the audit's default (internal_batch_size: auto)
# resolves to for a 3 x size x size input (27 at 224 px).
IG_BATCH = 64
OCCLUSION_BATCH = 64  # occluded images per pass, both sides


def resnet(size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=1000).eval()


def images(n: int, size: int) -> np.ndarray:
    """Normalised images, as the tutorial's preprocessing leaves them."""
    rng = np.random.default_rng(0)
    raw = rng.random((n, 3, size, size), dtype=np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return (raw - mean) / std


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def floors(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """The passes each method cannot do without, as bare loops."""
    from mlflow_xai.attribution.methods.occlusion import _occluded, _positions
    from mlflow_xai.config import OcclusionConfig

    window, strides = OCCLUSION["sliding_window_shapes"], OCCLUSION["strides"]
    shape = tuple(x.shape[1:])
    starts = [_positions(s, w, t) for s, w, t in zip(shape, window, strides, strict=True)]
    lows = torch.cartesian_prod(*(torch.tensor(a) for a in starts)).view(-1, len(shape))
    del OcclusionConfig

    def occlusion_floor() -> None:
        with torch.no_grad():
            model(x)
            per_pass = max(1, OCCLUSION_BATCH // len(x))
            for k in range(0, len(lows), per_pass):
                model(_occluded(x, lows[k : k + per_pass], tuple(window), 0.0))

    def ig_floor() -> None:
        alphas = torch.rand(IG_STEPS)
        points = (alphas.view(-1, 1, 1, 1, 1) * x.unsqueeze(0)).reshape(-1, *shape)
        targets = target.repeat(IG_STEPS)
        for k in range(0, len(points), IG_BATCH):
            p = points[k : k + IG_BATCH].clone().requires_grad_(True)
            out = model(p).gather(1, targets[k : k + IG_BATCH].view(-1, 1)).sum()
            torch.autograd.grad(out, p)

    def gradcam_floor() -> None:
        p = x.clone().requires_grad_(True)
        torch.autograd.grad(model(p).gather(1, target.view(-1, 1)).sum(), p)

    return {
        "occlusion": timed(occlusion_floor)[0],
        "integrated_gradients": timed(ig_floor)[0],
        "layer_gradcam": timed(gradcam_floor)[0],
    }


def captum_direct(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    window, strides = tuple(OCCLUSION["sliding_window_shapes"]), tuple(OCCLUSION["strides"])

    def occlusion() -> None:
        Occlusion(model).attribute(
            x,
            sliding_window_shapes=window,
            strides=strides,
            baselines=0.0,
            target=target,
            perturbations_per_eval=max(1, OCCLUSION_BATCH // len(x)),
        )

    def ig() -> None:
        IntegratedGradients(model).attribute(
            x,
            baselines=0.0 * x,
            target=target,
            n_steps=IG_STEPS,
            method="gausslegendre",
            internal_batch_size=IG_BATCH,
        )

    def gradcam() -> None:
        cam = LayerGradCam(model, model.layer4).attribute(x, target=target, relu_attributions=True)
        LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")

    return {
        "occlusion": timed(occlusion)[0],
        "integrated_gradients": timed(ig)[0],
        "layer_gradcam": timed(gradcam)[0],
    }


def gradcam_medians(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """One GradCAM call takes ~0.1 s here, too short to time once inside the CLI: our adapter and
    Captum's LayerGradCam (+ its upsampling), 11 calls each, taking turns; the medians."""
    from captum.attr import LayerAttribution, LayerGradCam

    from mlflow_xai.attribution.methods import build
    from mlflow_xai.config import load_config
    from mlflow_xai.model import ModelHandle

    cfg = load_config({"methods": {"layer_gradcam": {"layer": "layer4"}}})
    method = build("layer_gradcam", cfg.methods.layer_gradcam)
    handle = ModelHandle(model, torch.device("cpu"), "logit")

    def captum() -> None:
        cam = LayerGradCam(model, model.layer4).attribute(x, target=target, relu_attributions=True)
        LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")

    ours, theirs = [], []
    for _ in range(11):
        ours.append(timed(lambda: method.attribute(handle, x, target))[0])
        theirs.append(timed(captum)[0])
    return float(np.median(ours)), float(np.median(theirs))


def cli_audit(model: torch.nn.Module, x: np.ndarray, work: Path) -> dict[str, object]:
    """Log the model to a sqlite store and run ``mlflow-xai audit`` on it, as a CI job would."""
    import mlflow
    import yaml

    from mlflow_xai.tracking import log_pytorch_model

    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        model_uri = log_pytorch_model(model, x[:2])
    np.savez(work / "probe.npz", inputs=x)
    config = {
        "device": "cpu",
        "methods": {
            "occlusion": {**OCCLUSION, "internal_batch_size": OCCLUSION_BATCH},
            "integrated_gradients": {"n_steps": IG_STEPS},  # internal_batch_size: auto (IG_BATCH)
            "layer_gradcam": {"layer": "layer4"},
        },
        "artifacts": {
            "sheet_samples": len(x),
            "display": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "XDG_CACHE_HOME": str(work / "cache")}
    command = [
        sys.executable,
        "-m",
        "mlflow_xai.cli",
        "audit",
        "--model-uri",
        model_uri,
        "--probe",
        str(work / "probe.npz"),
        "--config",
        str(work / "config.yaml"),
        "--experiment",
        "bench",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    # stderr is no terminal: the audit prints "mlflow-xai: attributing ..." as its first batch starts.
    proc = subprocess.Popen(
        command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_batch, lines = None, []
    for line in proc.stderr:
        lines.append(line)
        if first_batch is None and line.startswith("mlflow-xai: attributing"):
            first_batch = time.perf_counter() - started
    proc.stdout.read()
    code = proc.wait()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if code not in (0, 1):
        raise SystemExit(f"the audit failed:\n{''.join(lines)[-3000:]}")
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
    metrics = run.data.metrics
    return {
        "wall": wall,
        "peak_rss_mib": max(peak, before) / 1024,
        "seconds": {
            m: metrics[f"xai/{m}/seconds"] for m in ("occlusion", "integrated_gradients", "layer_gradcam")
        },
        "figures": metrics.get("xai/integrated_gradients/figures_seconds", 0.0),
        "first_batch_after": first_batch,
    }


def import_and_load(work: Path) -> float:
    """A bare `import torch, captum, mlflow` and the model's load from the same store, in a process."""
    code = (
        "import time; t = time.perf_counter(); import torch, captum, mlflow; "
        f"mlflow.set_tracking_uri('sqlite:///{work / 'mlflow.db'}'); "
        "c = mlflow.MlflowClient(); e = c.get_experiment_by_name('Default'); "
        "r = c.search_runs([e.experiment_id])[0]; "
        "m = mlflow.pytorch.load_model(f'runs:/{r.info.run_id}/model'); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> None:
    global IG_BATCH
    from mlflow_xai.config import load_config

    IG_BATCH = load_config({}).methods.integrated_gradients.points_per_pass(3 * args.size * args.size)
    torch.set_num_threads(os.cpu_count() or 1)
    model = resnet(args.size)
    x_np = images(args.images, args.size)
    x = torch.from_numpy(x_np)
    with torch.no_grad():
        target = model(x).argmax(1)
    for p in model.parameters():
        p.requires_grad_(False)
    print(
        f"resnet18 (random init) at {args.size} px, {args.images} images, {torch.get_num_threads()} threads"
    )
    # Two rounds taking turns, the first a warm-up (allocator, thread pools); the second's times.
    for _ in range(2):
        floor = floors(model, x, target)
        direct = captum_direct(model, x, target)
    gradcam_ours, gradcam_captum = gradcam_medians(model, x, target)
    print(
        f"layer_gradcam, median of 11 calls each, taking turns: ours {gradcam_ours * 1000:.0f} ms, Captum "
        f"{gradcam_captum * 1000:.0f} ms = {gradcam_ours / gradcam_captum:.2f}x"
    )
    print(f"{'method':<22}{'floor':>9}{'captum':>9}{'ours':>9}{'ours/captum':>13}{'ours/floor':>12}")
    result = None
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as tmp:
            result = cli_audit(model, x_np, Path(tmp))
            bare = import_and_load(Path(tmp))
    for name in ("occlusion", "integrated_gradients", "layer_gradcam"):
        ours = result["seconds"][name] if result else float("nan")
        print(
            f"{name:<22}{floor[name]:>8.2f}s{direct[name]:>8.2f}s{ours:>8.2f}s"
            f"{ours / direct[name]:>12.2f}x{ours / floor[name]:>11.2f}x"
        )
    if result is None:
        return
    floors_total = sum(floor.values())
    method_total = sum(result["seconds"].values())
    print(f"IG figures: {result['figures']:.2f}s (its own metric, xai/integrated_gradients/figures_seconds)")
    print(
        f"whole CLI audit: {result['wall']:.2f}s wall; sum of floors {floors_total:.2f}s; "
        f"methods {method_total:.2f}s; whole / floors = {result['wall'] / floors_total:.2f}x"
    )
    print(f"bare import torch, captum, mlflow + model load: {bare:.2f}s")
    startup = result["first_batch_after"]
    print(f"CLI start-up to the first batch: {startup:.2f}s = {startup / bare:.2f}x the bare start")
    print(f"peak RSS of the CLI audit: {result['peak_rss_mib']:.0f} MiB")
    print(json.dumps({"floor": floor, "captum": direct, "cli": result, "bare_start": bare}, default=str))


def memory(args: argparse.Namespace) -> None:
    for samples in args.samples:
        code = (
            "import resource, numpy as np, torch, torchvision, mlflow_xai\n"
            "from mlflow_xai.allocator import keep_freed_memory\n"
            "keep_freed_memory(); torch.manual_seed(0)\n"
            "m = torchvision.models.resnet18(num_classes=10).eval()\n"
            f"x = np.lib.format.open_memmap('/tmp/mlflow-xai-mem.npy', mode='w+', dtype=np.float32, "
            f"shape=({samples}, 3, {args.size}, {args.size}))\n"
            "rng = np.random.default_rng(0)\n"
            f"for k in range(0, {samples}, 64): x[k:k+64] = rng.random(x[k:k+64].shape, dtype=np.float32)\n"
            "x.flush(); del x\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "probe = np.load('/tmp/mlflow-xai-mem.npy', mmap_mode='r')\n"
            "mlflow_xai.audit(m, probe, {'batch_size': 32, 'methods': {'integrated_gradients': "
            "{'n_steps': 8}, 'occlusion': {}}, "
            "'artifacts': {'sheet_samples': 2}})\n"
            "print(before / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        before, after = map(float, out.stdout.split())
        print(
            f"{samples:>6} samples at {args.size} px: peak RSS {before:.0f} MiB before the audit, "
            f"{after:.0f} MiB after"
        )
    Path("/tmp/mlflow-xai-mem.npy").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="image side (224; 64 with --memory)")
    parser.add_argument("--skip-cli", action="store_true", help="only the floors and Captum")
    parser.add_argument("--memory", action="store_true", help="peak RSS against probe size instead")
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 1024])
    args = parser.parse_args()
    if args.memory:
        args.size = args.size or 64
        memory(args)
    else:
        args.size = args.size or 224
        speed(args)


if __name__ == "__main__":
    main()
