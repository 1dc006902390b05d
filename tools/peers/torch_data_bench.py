#!/usr/bin/env python3
# PyTorch "peer" benchmark for the GPU data pipeline: the reference numbers that
# `bamtool bench-data` is compared against. It times (a) batched nvJPEG decoding via
# torchvision.io.decode_jpeg(device='cuda') and (b) DINO's CPU multi-crop DataLoader.
"""Usage:
  python3 tools/peers/torch_data_bench.py --folder /data/imgs [--images 2000] \
      [--workers 16] [--batch_size 256] [--cpu_batch_size 64] [--seconds 20] \
      [--modes gpu_decode,cpu_pipeline] [--blur pil|torchvision] [--json out.json]

Prints one line per measured mode, e.g. `peer gpu_decode img/s 21157.3`.
img/s counts source images (one cpu_pipeline image = 2 global + 6 local crops).
"""

import argparse
import json
import os
import platform
import random
import sys
import time

ALL_MODES = ("gpu_decode", "cpu_pipeline")
JPEG_EXTS = (".jpg", ".jpeg")


def list_jpegs(folder, limit):
    paths = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(JPEG_EXTS):
                paths.append(os.path.join(root, name))
    paths.sort()
    if limit is not None and limit > 0:
        paths = paths[:limit]
    return paths


# --------------------------------------------------------------------------- gpu_decode

def _decode_attempts(tv_io):
    """(label, batched?, mode) combinations to probe, best first."""
    modes = []
    for name in ("RGB", "UNCHANGED"):
        m = getattr(tv_io.ImageReadMode, name, None)
        if m is not None:
            modes.append((name, m))
    attempts = []
    for batched in (True, False):
        for name, m in modes:
            attempts.append((("batched" if batched else "per-image") + "/" + name, batched, m))
    return attempts


def _run_decode(tv_io, datas, batched, mode):
    if batched:
        out = tv_io.decode_jpeg(datas, mode=mode, device="cuda")
        if not isinstance(out, (list, tuple)):
            raise TypeError("decode_jpeg(list) did not return a list")
        return len(out)
    for d in datas:
        tv_io.decode_jpeg(d, mode=mode, device="cuda")
    return len(datas)


def bench_gpu_decode(paths, args):
    import torch
    import torchvision.io as tv_io

    if not torch.cuda.is_available():
        return {"skipped": "CUDA is not available (torch.cuda.is_available() is False)"}

    # Read every file into memory first; only decoding is timed.
    t0 = time.perf_counter()
    datas = []
    for p in paths:
        try:
            datas.append(tv_io.read_file(p))
        except Exception:
            with open(p, "rb") as f:
                buf = f.read()
            datas.append(torch.frombuffer(bytearray(buf), dtype=torch.uint8))
    read_s = time.perf_counter() - t0
    total_bytes = sum(int(d.numel()) for d in datas)
    print("gpu_decode: read %d files (%.1f MiB) in %.2f s"
          % (len(datas), total_bytes / 2**20, read_s), flush=True)

    B = max(1, min(args.batch_size, len(datas)))

    # Probe which API works (list API needs torchvision >= 0.19).
    chosen = None
    probe = datas[:B]
    errors = []
    for label, batched, mode in _decode_attempts(tv_io):
        try:
            _run_decode(tv_io, probe, batched, mode)
            torch.cuda.synchronize()
            chosen = (label, batched, mode)
            break
        except Exception as e:  # noqa: BLE001 - we want to try the next variant
            errors.append("%s: %s" % (label, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if chosen is None:
        # Maybe a bad file in the probe batch: find decodable files one by one.
        good = []
        for d in datas:
            try:
                tv_io.decode_jpeg(d, device="cuda")
                good.append(d)
            except Exception:
                pass
        torch.cuda.synchronize()
        if not good:
            return {"skipped": "decode_jpeg(device='cuda') failed: " + "; ".join(errors)}
        datas = good
        B = max(1, min(args.batch_size, len(datas)))
        for label, batched, mode in _decode_attempts(tv_io):
            try:
                _run_decode(tv_io, datas[:B], batched, mode)
                torch.cuda.synchronize()
                chosen = (label, batched, mode)
                break
            except Exception as e:  # noqa: BLE001
                errors.append("%s: %s" % (label, e))
        if chosen is None:
            return {"skipped": "decode_jpeg(device='cuda') failed: " + "; ".join(errors)}
    label, batched, mode = chosen
    if errors:
        print("gpu_decode: fell back to %s (%s)" % (label, "; ".join(errors)), flush=True)

    # Validation pass over all data (also warms nvJPEG for every size seen);
    # drop files that the GPU decoder rejects so the timed loop cannot fail.
    good, dropped = [], 0
    for i in range(0, len(datas), B):
        chunk = datas[i:i + B]
        try:
            _run_decode(tv_io, chunk, batched, mode)
            good.extend(chunk)
        except Exception:
            for d in chunk:
                try:
                    tv_io.decode_jpeg(d, mode=mode, device="cuda")
                    good.append(d)
                except Exception:
                    dropped += 1
    torch.cuda.synchronize()
    datas = good
    if dropped:
        print("gpu_decode: dropped %d files the GPU decoder rejects" % dropped, flush=True)
    if not datas:
        return {"skipped": "no file could be decoded on the GPU"}
    B = max(1, min(args.batch_size, len(datas)))
    batches = [datas[i:i + B] for i in range(0, len(datas) - B + 1, B)] or [datas[:B]]

    # Warm-up batch (excluded), then time whole batches within the budget.
    _run_decode(tv_io, batches[0], batched, mode)
    torch.cuda.synchronize()
    n_img = 0
    n_batches = 0
    t0 = time.perf_counter()
    while True:
        n_img += _run_decode(tv_io, batches[n_batches % len(batches)], batched, mode)
        n_batches += 1
        if time.perf_counter() - t0 >= args.seconds:
            break
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "images": len(datas),
        "workers": 0,
        "batch_size": B,
        "batches": n_batches,
        "decoded": n_img,
        "seconds": elapsed,
        "img_per_s": n_img / elapsed,
        "api": label,
        "mean_file_bytes": total_bytes / max(1, len(paths)),
    }


# --------------------------------------------------------------------------- cpu_pipeline

class PILGaussianBlur(object):
    """DINO's utils.GaussianBlur: PIL ImageFilter.GaussianBlur, radius ~ U(0.1, 2.0), with prob p."""

    def __init__(self, p, radius_min=0.1, radius_max=2.0):
        self.p = p
        self.radius_min = radius_min
        self.radius_max = radius_max

    def __call__(self, img):
        from PIL import ImageFilter
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(
            radius=random.uniform(self.radius_min, self.radius_max)))


def make_blur(p, kind):
    # Default ("pil") is what DINO's own code does: PIL GaussianBlur with the radius
    # (sigma) drawn from U(0.1, 2.0). "torchvision" uses transforms.GaussianBlur with
    # kernel_size 23 and sigma (0.1, 2.0), wrapped in RandomApply(p).
    if kind == "torchvision":
        from torchvision import transforms as T
        blur = T.GaussianBlur(kernel_size=23, sigma=(0.1, 2.0))
        return blur if p >= 1.0 else T.RandomApply([blur], p=p)
    return PILGaussianBlur(p)


class DinoMultiCrop(object):
    """Mirror of DINO's DataAugmentationDINO (2 global 224 crops + N local 96 crops)."""

    def __init__(self, global_scale=(0.25, 1.0), local_scale=(0.05, 0.25),
                 local_crops=6, blur="pil"):
        from torchvision import transforms as T
        try:
            bicubic = T.InterpolationMode.BICUBIC
        except AttributeError:  # very old torchvision
            from PIL import Image
            bicubic = Image.BICUBIC

        flip_and_color_jitter = T.Compose([
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4,
                                         saturation=0.2, hue=0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ])
        normalize = T.Compose([
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])
        self.global1 = T.Compose([
            T.RandomResizedCrop(224, scale=global_scale, interpolation=bicubic),
            flip_and_color_jitter,
            make_blur(1.0, blur),
            normalize,
        ])
        self.global2 = T.Compose([
            T.RandomResizedCrop(224, scale=global_scale, interpolation=bicubic),
            flip_and_color_jitter,
            make_blur(0.1, blur),
            T.RandomSolarize(threshold=128, p=0.2),
            normalize,
        ])
        self.local_crops = local_crops
        self.local = T.Compose([
            T.RandomResizedCrop(96, scale=local_scale, interpolation=bicubic),
            flip_and_color_jitter,
            make_blur(0.5, blur),
            normalize,
        ])

    def __call__(self, img):
        crops = [self.global1(img), self.global2(img)]
        for _ in range(self.local_crops):
            crops.append(self.local(img))
        return crops


def _make_dataset_classes():
    import torch.utils.data as tud

    class JpegFolder(tud.Dataset):
        def __init__(self, paths, transform):
            self.paths = paths
            self.transform = transform

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, idx):
            from PIL import Image
            # Skip unreadable files by moving to the next one (bounded).
            for k in range(len(self.paths)):
                p = self.paths[(idx + k) % len(self.paths)]
                try:
                    with open(p, "rb") as f:
                        img = Image.open(f).convert("RGB")
                    return self.transform(img)
                except Exception:
                    continue
            raise RuntimeError("no readable image in dataset")

    class EndlessShuffle(tud.Sampler):
        """Reshuffled indices forever, so the timed loop never hits an epoch boundary."""

        def __init__(self, n, seed=0):
            self.n = n
            self.seed = seed

        def __iter__(self):
            rng = random.Random(self.seed)
            idx = list(range(self.n))
            while True:
                rng.shuffle(idx)
                for i in idx:
                    yield i

        def __len__(self):
            return 2**62

    return JpegFolder, EndlessShuffle


def bench_cpu_pipeline(paths, args):
    import torch
    import torch.utils.data as tud

    JpegFolder, EndlessShuffle = _make_dataset_classes()
    transform = DinoMultiCrop(local_crops=args.local_crops, blur=args.blur)
    ds = JpegFolder(paths, transform)
    pin = (not args.no_pin_memory) and torch.cuda.is_available()
    workers = max(0, args.workers)
    kwargs = dict(batch_size=args.cpu_batch_size, sampler=EndlessShuffle(len(ds)),
                  num_workers=workers, pin_memory=pin, drop_last=True)
    if workers > 0:
        kwargs["persistent_workers"] = True
        kwargs["prefetch_factor"] = 2
        # The dataset classes are local to a function: fork keeps them usable in the workers
        # whatever the default start method (Python 3.14 made it forkserver on Linux).
        if sys.platform.startswith("linux"):
            kwargs["multiprocessing_context"] = "fork"
    loader = tud.DataLoader(ds, **kwargs)
    it = iter(loader)

    # Each worker builds whole batches, so the first wave of `workers` batches arrives together once
    # the workers have started: all of it is warm-up. Timing starts after it and ends on a whole
    # wave, so no batch prepared before the clock started is counted in a partial window.
    wave = max(1, workers)
    t0 = time.perf_counter()
    for _ in range(wave):
        batch = next(it)
        del batch
    warm_s = time.perf_counter() - t0
    print("cpu_pipeline: warm-up (first %d batches) took %.2f s" % (wave, warm_s), flush=True)

    n_img = 0
    n_batches = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds or n_batches % wave != 0:
        batch = next(it)
        n_img += int(batch[0].shape[0])
        n_batches += 1
        del batch
    elapsed = time.perf_counter() - t0
    del it, loader
    return {
        "images": len(paths),
        "workers": workers,
        "batch_size": args.cpu_batch_size,
        "batches": n_batches,
        "decoded": n_img,
        "seconds": elapsed,
        "img_per_s": n_img / elapsed if elapsed > 0 else 0.0,
        "crops_per_image": 2 + args.local_crops,
        "pin_memory": pin,
        "blur": args.blur,
        "warmup_s": warm_s,
    }


# --------------------------------------------------------------------------- main

def env_info():
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001
        info["torch"] = "unavailable: %s" % e
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except Exception as e:  # noqa: BLE001
        info["torchvision"] = "unavailable: %s" % e
    try:
        import PIL
        info["pillow"] = PIL.__version__
    except Exception:
        pass
    try:  # DataLoader workers pass batches through shared memory: a small /dev/shm makes them fail
        st = os.statvfs("/dev/shm")
        info["dev_shm_gib"] = round(st.f_frsize * st.f_blocks / 2**30, 1)
    except OSError:
        pass
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch peer of `bamtool bench-data`.")
    ap.add_argument("--folder", required=True, help="folder of .jpg files (searched recursively)")
    ap.add_argument("--images", type=int, default=2000, help="cap on how many files are used")
    ap.add_argument("--workers", type=int, default=16, help="DataLoader workers (cpu_pipeline)")
    ap.add_argument("--batch_size", type=int, default=256, help="images per nvJPEG batch (gpu_decode)")
    ap.add_argument("--cpu_batch_size", type=int, default=64,
                    help="images per DataLoader batch (cpu_pipeline). The per-image work sets the rate; "
                         "a small batch keeps the warm-up wave and the whole waves timed short")
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per measurement")
    ap.add_argument("--modes", default=",".join(ALL_MODES),
                    help="comma list of: " + ", ".join(ALL_MODES))
    ap.add_argument("--json", default=None, help="write results as JSON to this path")
    ap.add_argument("--blur", choices=("pil", "torchvision"), default="pil",
                    help="pil = DINO's PIL radius U(0.1,2); torchvision = GaussianBlur(23, (0.1,2))")
    ap.add_argument("--local_crops", type=int, default=6)
    ap.add_argument("--no_pin_memory", action="store_true",
                    help="cpu_pipeline: do not pin batches (DINO pins)")
    args = ap.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad:
        ap.error("unknown mode(s): %s (choose from %s)" % (", ".join(bad), ", ".join(ALL_MODES)))
    if args.batch_size < 1 or args.cpu_batch_size < 1:
        ap.error("--batch_size and --cpu_batch_size must be >= 1")

    paths = list_jpegs(args.folder, args.images)
    if not paths:
        print("error: no .jpg/.jpeg files under %s" % args.folder, file=sys.stderr)
        return 2
    if "cpu_pipeline" in modes and len(paths) < args.cpu_batch_size:
        print("note: %d files < batch size %d; cpu_pipeline reuses files across batches"
              % (len(paths), args.cpu_batch_size), flush=True)

    info = env_info()
    print("env: " + ", ".join("%s=%s" % kv for kv in sorted(info.items())), flush=True)
    print("files: %d from %s" % (len(paths), args.folder), flush=True)

    results = {}
    for mode in modes:
        print("== %s" % mode, flush=True)
        try:
            if mode == "gpu_decode":
                r = bench_gpu_decode(paths, args)
            else:
                r = bench_cpu_pipeline(paths, args)
        except ImportError as e:
            r = {"skipped": "import failed: %s" % e}
        except Exception as e:  # noqa: BLE001 - report and continue with other modes
            r = {"skipped": "error: %s: %s" % (type(e).__name__, e)}
        results[mode] = r
        if "skipped" in r:
            print("%s: skipped (%s)" % (mode, r["skipped"]), flush=True)
        else:
            print("%s: %d images in %.2f s over %d batches" %
                  (mode, r["decoded"], r["seconds"], r["batches"]), flush=True)

    print()
    print("%-13s %7s %8s %6s %11s" % ("mode", "images", "workers", "batch", "img/s"))
    for mode in modes:
        r = results[mode]
        if "skipped" in r:
            print("%-13s %7s %8s %6s %11s" % (mode, "-", "-", "-", "skipped"))
        else:
            print("%-13s %7d %8s %6d %11.1f" % (
                mode, r["images"], r["workers"] if mode == "cpu_pipeline" else "-",
                r["batch_size"], r["img_per_s"]))
    for mode in modes:
        r = results[mode]
        if "skipped" in r:
            print("peer %-12s skipped: %s" % (mode, r["skipped"]))
        else:
            print("peer %-12s img/s %.1f" % (mode, r["img_per_s"]))
    sys.stdout.flush()

    if args.json:
        out = {"env": info, "folder": args.folder, "files": len(paths),
               "args": vars(args), "results": results}
        d = os.path.dirname(os.path.abspath(args.json))
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)
        print("wrote %s" % args.json)

    measured = [m for m in modes if "skipped" not in results[m]]
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
