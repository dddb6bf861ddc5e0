"""tks-train: train a spiking CNN with one of the temporal training methods (tks.methods).

    tks-train --dataset digits --model convsnn --method tks --T 4 --epochs 30 --out runs/digits-tks
    tks-train --dataset digits-events --method tssd --teacher-T 16 --T 8 --out runs/events-tssd
    tks-train --dataset digits --method ssnn --T 8 --stage-T 8,5,3 --out runs/digits-ssnn
    tks-train --out runs/digits-tks --resume                      # continue an interrupted run
    torchrun --nproc_per_node 4 -m tks.train --dataset cifar10 --model resnet19 --T 4 ...

Optimiser AdamW, learning rate per iteration: linear warm-up then cosine to 0 (the authors' recipe).
``--batch-size`` is the total over all processes. Each epoch writes ``metrics.csv`` and
``checkpoint.pt`` into ``--out`` (see ``tks.runs``); ``--resume`` continues from the last finished
epoch exactly as an uninterrupted run would (model, optimiser, scheduler, AMP scaler, every
process's RNG states; the data order depends on the seed and the epoch only).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import runs
from .data import DATASETS, DatasetNotFoundError, build_datasets
from .methods import METHODS, OPTIONS, MethodNet, MethodOptionError, build_method, check_options, resolve_hparams
from .models import MODELS, NeuronConfig

# Options that define the training; a resumed run must not change them (with the method's own
# options, tks.methods.OPTIONS: see _recipe_keys).
RECIPE_KEYS = ("dataset", "model", "width", "neuron_type", "max_spike_count", "T", "method", "epochs", "batch_size",
               "lr", "weight_decay", "warmup_epochs", "amp", "seed")
# Keys of runs written before the key existed, and the value such a run had.
RECIPE_KEY_DEFAULTS = {"neuron_type": "lif", "max_spike_count": None}


def _recipe_keys(method: str) -> tuple[str, ...]:
    return RECIPE_KEYS + METHODS[method].options


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The CLI; ``suppress_defaults`` leaves out every option not given (to see what a user passed)."""

    def d(value):
        return argparse.SUPPRESS if suppress_defaults else value

    p = argparse.ArgumentParser(
        prog="tks-train", description=__doc__.split("\n\n")[0],
        formatter_class=runs.HelpFormatter,
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default=d("digits"),
                   help="digits is bundled (offline); the others read --data-dir")
    p.add_argument("--model", choices=sorted(MODELS), default=d(None),
                   help="default: the paper's model for the dataset (convsnn for digits, resnet19 for CIFAR, "
                        "vggsnn for DVS, mra_snn for bearing signals)")
    p.add_argument("--width", type=float, default=d(1.0), help="channel multiplier (1.0 = the paper's model)")
    p.add_argument("--neuron", dest="neuron_type", choices=("lif", "ilif"), default=d("lif"),
                   help="lif: the TKS authors' binary LIF (tau 2, threshold 0.5, hard reset); ilif: integer spike "
                        "counts 0..D (I-LIF: tau 4/3, threshold 1, soft reset), D from --spike-bits or --max-spike-count")
    p.add_argument("--spike-bits", type=int, default=d(None), help="ilif: b-bit spikes, D = 2**b - 1 (default 2)")
    p.add_argument("--max-spike-count", type=int, default=d(None), help="ilif: the largest count D (instead of --spike-bits)")
    p.add_argument("--T", type=int, default=d(4), help="timesteps")
    p.add_argument("--method", "--loss", dest="method", choices=list(METHODS), default=d("tks"),
                   help="; ".join(f"{name}: {cls.summary}" for name, cls in METHODS.items())
                        + " (--loss is the same option)")
    group = p.add_argument_group("method options (each method reads its own; see --method)")
    for option in OPTIONS.values():
        group.add_argument(option.flag, dest=option.dest, type=option.type, default=d(None), help=option.help)
    p.add_argument("--epochs", type=int, default=d(30), help="training epochs (the authors: 300)")
    p.add_argument("--batch-size", type=int, default=d(128), help="total over all processes")
    p.add_argument("--lr", type=float, default=d(1e-3), help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=d(0.01), help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=int, default=d(None),
                   help="linear warm-up (default: epochs // 10, at most 5)")
    p.add_argument("--amp", action="store_true", default=d(False),
                   help="mixed precision (fp16 + loss scaling on CUDA, bf16 on CPU). On the CPU it is slower, "
                        "not faster: about 8x for digits, from torch's CPU bf16 convolutions, not these kernels")
    p.add_argument("--seed", type=int, default=d(0), help="seeds weights, data order and augmentation")
    p.add_argument("--out", default=d(None), help="run folder (default: runs/<dataset>-<model>-<loss>-T<T>)")
    p.add_argument("--resume", action="store_true", default=d(False),
                   help="continue the run in --out from its last checkpoint (options default to the run's)")
    p.add_argument("--data-dir", default=d("data"), help="where datasets are (and downloads and frame caches go)")
    p.add_argument("--download", action="store_true", default=d(False), help="download the dataset if missing")
    p.add_argument("--device", default=d("auto"), help="auto (CUDA if there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=int, default=d(0), help="DataLoader worker processes per process")
    # For tests: cut epochs short; stop after an epoch as if the job had been killed there.
    p.add_argument("--max-batches", type=int, default=d(None), help=argparse.SUPPRESS)
    p.add_argument("--stop-after-epoch", type=int, default=d(None), help=argparse.SUPPRESS)
    return p


class ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``, in order, no padding: exact sharded evaluation."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _fail(message: str) -> "SystemExit":
    print(f"tks-train: error: {message}", file=sys.stderr)
    return SystemExit(2)


def _setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """``(rank, world, device)``; starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device_arg)
    except (RuntimeError, ValueError):
        raise _fail(f"--device {device_arg}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise _fail(f"--device {device_arg}: tks-train runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _fail(f"--device {device_arg}: CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise _fail(f"--device {device_arg}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        if device.index is None:
            device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _resolve_options(argv: Optional[list[str]]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    if args.out is None:
        if args.resume:
            raise _fail("--resume needs --out RUN_DIR, the run to continue")
        model = args.model or "default"
        args.out = os.path.join("runs", f"{args.dataset}-{model}-{args.method}-T{args.T}")
    ckpt_path = runs.checkpoint_path(args.out)
    if args.resume:
        if not os.path.isfile(ckpt_path):
            raise _fail(f"--resume: {args.out} has no {runs.CHECKPOINT_FILE} to continue; "
                        f"run without --resume to start")
        try:
            saved = runs.read_config(args.out)
        except FileNotFoundError as e:
            raise _fail(str(e))
        saved.setdefault("method", saved.get("loss"))  # runs written before methods had their own key
        for k, v in RECIPE_KEY_DEFAULTS.items():
            saved.setdefault(k, v)
        if "spike_bits" in given or "max_spike_count" in given:  # compare D, however it was given
            args.neuron_type = given.get("neuron_type", saved["neuron_type"])
            given["max_spike_count"] = _spike_levels(args)
        keys = _recipe_keys(saved["method"])
        changed = [f"{_flag(k)} {given[k]} (the run has {saved.get(k)})"
                   for k in set(keys) | set(OPTIONS) if k in given and given[k] != saved.get(k)]
        if changed:
            raise _fail(f"--resume continues the run in {args.out} with its own options; these differ: "
                        f"{'; '.join(sorted(changed))}. Drop them, or start a new run in another --out")
        for k in keys:
            setattr(args, k, saved.get(k))  # an option the run's method leaves unset is not in its config
        if "data_dir" not in given:
            args.data_dir = saved["data_dir"]
    elif os.path.exists(ckpt_path):
        raise _fail(f"{args.out} already holds a run ({runs.CHECKPOINT_FILE}); pass --resume to continue it, "
                    f"or choose another --out")
    for name, value, low in (("T", args.T, 1), ("epochs", args.epochs, 1), ("batch-size", args.batch_size, 1),
                             ("num-workers", args.num_workers, 0)):
        if value < low:
            raise _fail(f"--{name} {value}: must be >= {low}")
    for name, value in (("lr", args.lr), ("weight-decay", args.weight_decay)):
        if not (math.isfinite(value) and value >= 0):
            raise _fail(f"--{name} {value}: must be a finite number >= 0")
    args.max_spike_count = _spike_levels(args)
    # the method's options: their domains and that the method uses them, before anything is built;
    # what depends on the data is checked once the dataset is known (_train)
    args.method_given = {d: getattr(args, d) for d in OPTIONS if getattr(args, d) is not None}
    if not args.resume:
        try:
            check_options(args.method, args.method_given)
        except MethodOptionError as e:
            raise _fail(str(e))
    if args.warmup_epochs is None:
        args.warmup_epochs = min(5, args.epochs // 10)
    if not 0 <= args.warmup_epochs < args.epochs:
        raise _fail(f"--warmup-epochs {args.warmup_epochs}: must be in [0, epochs={args.epochs})")
    return args


def _build_model_or_fail(args, config: dict, info, device: torch.device):
    """The run's model on ``device``, checked on one sample of the data's shape first, so a model
    that does not fit the dataset is a one-line error instead of a traceback in the first step."""
    shape = "x".join(map(str, info.input_shape))
    try:
        model = runs.model_from_config(config).to(device)
        probe = torch.zeros(1, *info.input_shape, device=device)
        T = config["T"]  # the run's T (a shrinking network runs on T1 = T steps only)
        if not info.static:
            probe = probe.unsqueeze(0).expand(T, *probe.shape)  # a sequence [T, B, ...]
        model.eval()
        with torch.no_grad():
            model(probe, T=T) if info.static else model(probe)
        model.train()
    except MethodOptionError as e:  # a method option that does not fit the model (ssnn's --stage-T)
        raise _fail(str(e)) from None
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise _fail(f"--model {args.model} does not fit --dataset {args.dataset} ({shape} inputs): {first}; "
                    f"choose another --model (the default for {args.dataset} is {info.default_model})") from None
    return model


def _spike_levels(args) -> Optional[int]:
    """D of the I-LIF neuron from --spike-bits / --max-spike-count (None for the binary LIF)."""
    bits, count = args.spike_bits, args.max_spike_count
    if args.neuron_type != "ilif":
        if bits is not None or count is not None:
            raise _fail("--spike-bits / --max-spike-count set the levels of --neuron ilif; add --neuron ilif")
        return None
    if bits is not None and not 1 <= bits <= 24:
        raise _fail(f"--spike-bits {bits}: must be in 1..24 (D = 2**bits - 1)")
    if count is not None and not 1 <= count <= 1 << 24:
        raise _fail(f"--max-spike-count {count}: must be in 1..2**24")
    if bits is not None and count is not None and count != 2**bits - 1:
        raise _fail(f"--spike-bits {bits} means D = {2**bits - 1}, but --max-spike-count is {count}; give one of them")
    if count is not None:
        return count
    return 2 ** (2 if bits is None else bits) - 1


def _flag(dest: str) -> str:
    return OPTIONS[dest].flag if dest in OPTIONS else f"--{dest.replace('_', '-')}"


def _lr_lambda(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def _gather_rng_states(world: int) -> list[dict]:
    """Every process's RNG states, in rank order (on every process)."""
    state = _rng_state()
    if world == 1:
        return [state]
    # all_gather_object cannot carry tensors here (torch 2.14 fails to unpickle them): send bytes
    buf = io.BytesIO()
    torch.save(state, buf)
    out = [None] * world
    dist.all_gather_object(out, buf.getvalue())
    return [torch.load(io.BytesIO(b), weights_only=True) for b in out]


def _evaluate(model, loader, T: int, static: bool, device, world: int, autocast,
              eval_input=lambda x: x) -> tuple[float, float]:
    """(mean CE of the mean output, top-1 of the mean output) over the whole test set;
    ``eval_input`` turns a loader batch into the deployed model's input (the method's)."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                mean = runs.model_outputs(model, eval_input(x), T, static).float().mean(0)
            totals[0] += torch.nn.functional.cross_entropy(mean, y, reduction="sum").double()
            totals[1] += (mean.argmax(-1) == y).sum()
            totals[2] += y.numel()
    if world > 1:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


class _Progress:
    """Where training is, for the one-line message on an interruption."""

    epoch: Optional[int] = None  # the epoch running (1-based)
    saved: int = 0  # the last epoch whose checkpoint is on disk


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[list[str]] = None) -> int:
    args = _resolve_options(argv)
    rank, world, device = _setup_distributed(args.device)
    progress = _Progress()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed job says what is saved, too
    try:
        return _train(args, rank, world, device, progress)
    except KeyboardInterrupt as e:
        if rank == 0:
            what = f"during epoch {progress.epoch}/{args.epochs}" if progress.epoch else "before the first epoch"
            if progress.saved:
                saved = f"epoch {progress.saved} is saved in {runs.checkpoint_path(args.out)}"
                then = f"continue with: tks-train --out {args.out} --resume"
            else:
                saved = "no epoch finished, nothing was saved"
                then = "start again with the same command"
            print(f"tks-train: interrupted ({str(e) or 'SIGINT'}) {what}; {saved}; {then}", file=sys.stderr)
        return 143 if str(e) == "SIGTERM" else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(args, rank: int, world: int, device: torch.device, progress: _Progress) -> int:
    if args.batch_size % world:
        raise _fail(f"--batch-size {args.batch_size} is the total over {world} processes: "
                    f"make it a multiple of {world}")
    _seed_all(args.seed)  # the same on every process: the same initial weights

    def datasets(T):
        try:
            if world > 1 and args.download and rank != 0:
                dist.barrier()  # wait for process 0 to download, then read what it wrote
            built = build_datasets(args.dataset, T=T, data_dir=args.data_dir, download=args.download and rank == 0)
            if world > 1 and args.download and rank == 0:
                dist.barrier()
        except DatasetNotFoundError as e:
            raise _fail(str(e))
        return built

    train_set, test_set, info = datasets(args.T)
    args.model = args.model or info.default_model
    try:
        given = {d: getattr(args, d) for d in METHODS[args.method].options if getattr(args, d) is not None}
        hparams = resolve_hparams(args.method, given, info, args.T)
    except MethodOptionError as e:
        raise _fail(str(e))
    method = build_method(args.method, hparams, epochs=args.epochs, T=args.T, static=info.static)
    if method.data_T() != args.T:  # e.g. TSSD's teacher frames on event data
        train_set, test_set, info = datasets(method.data_T())
    neuron = NeuronConfig() if args.neuron_type == "lif" else NeuronConfig.ilif(args.max_spike_count)
    config = {k: getattr(args, k) for k in RECIPE_KEYS}
    config.update(
        loss=args.method,  # the key runs had before methods had their own (kept for readers of old runs)
        num_classes=info.num_classes, in_channels=info.in_channels, image_size=info.image_size,
        signal_length=info.signal_length, static=info.static,
        neuron=asdict(neuron), data_dir=os.path.abspath(args.data_dir), world_size=world, torch=str(torch.__version__),
    )
    config.update(method.hparams)  # the method builds the model from its options (ssnn's --stage-T)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest convolutions
    model = _build_model_or_fail(args, config, info, device)
    try:
        net = MethodNet(model, method, info).to(device)
    except MethodOptionError as e:
        raise _fail(str(e))
    config.update(method.hparams)  # with what the model decided (tssd's default --weak-stage)
    _seed_all(args.seed + rank)  # from here on (augmentation, dropout) each process draws its own numbers
    per_process_batch = args.batch_size // world
    train_sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                       drop_last=True)
    loader_rng = torch.Generator()
    loader_kw = dict(num_workers=args.num_workers, pin_memory=device.type == "cuda",
                     persistent_workers=False)
    train_loader = DataLoader(train_set, batch_size=per_process_batch, sampler=train_sampler, drop_last=True,
                              generator=loader_rng, **loader_kw)
    test_loader = DataLoader(test_set, batch_size=per_process_batch, sampler=ShardSampler(len(test_set), rank, world),
                             **loader_kw)
    steps_per_epoch = len(train_loader) if args.max_batches is None else min(len(train_loader), args.max_batches)
    if steps_per_epoch == 0:
        raise _fail(f"--batch-size {args.batch_size} is larger than the training set ({len(train_set)} samples)")

    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(args.warmup_epochs * steps_per_epoch, args.epochs * steps_per_epoch))
    use_scaler = args.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp)

    start_epoch, history = 0, []
    ckpt_path = runs.checkpoint_path(args.out)
    if args.resume:
        try:
            ckpt = runs.load_checkpoint(ckpt_path)
        except runs.CheckpointError as e:
            raise _fail(str(e))
        if ckpt["config"]["world_size"] != world:
            raise _fail(f"the run in {args.out} was trained with {ckpt['config']['world_size']} processes; resume it "
                        f"with the same number (got {world}) so it continues exactly")
        model.load_state_dict(ckpt["model"])
        net.extras.load_state_dict(ckpt.get("method", {}))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"][rank])
        start_epoch, history = ckpt["epoch"], list(ckpt["history"])
        progress.saved = start_epoch
        config = ckpt["config"]
        if rank == 0:
            print(f"tks-train: resuming {args.out} after epoch {start_epoch}/{args.epochs}", file=sys.stderr)
    elif rank == 0:
        os.makedirs(args.out, exist_ok=True)
        runs.write_config(args.out, config)

    train_net = net
    if world > 1:
        train_net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    from tqdm import tqdm

    for epoch in range(start_epoch, args.epochs):
        progress.epoch = epoch + 1
        started = time.perf_counter()
        train_sampler.set_epoch(epoch)
        loader_rng.manual_seed(args.seed * 100003 + epoch * 1009 + rank)  # worker seeds: (seed, epoch, rank) only
        method.set_epoch(epoch)
        train_net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        part_sums: dict[str, torch.Tensor] = {}
        seen = 0
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0,
                   leave=False, dynamic_ncols=True, file=sys.stderr)
        for step, (x, y) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                outputs = train_net(x)
            loss, parts = method.loss(outputs, y)
            logits = outputs["logits"]
            if not torch.isfinite(loss):
                raise _fail(f"the loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: "
                            f"lower --lr, or drop --amp")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach().double() * y.numel()
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value.detach().double() * y.numel()
            correct += (logits.detach().float().mean(0).argmax(-1) == y).sum()
            seen += y.numel()
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
        bar.close()
        part_names = sorted(part_sums)
        stats = torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)]
                            + [part_sums[n] for n in part_names])
        if world > 1:
            dist.all_reduce(stats)
        if world > 1:  # BatchNorm running stats drift apart per process: evaluate (and save) process 0's
            for buffer in net.buffers():
                dist.broadcast(buffer, 0)
        test_loss, test_acc = _evaluate(model, test_loader, args.T, info.static, device, world, autocast,
                                        method.eval_input)
        count = stats[2].item()
        row = {
            "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "lam": method.lam,
            "train_loss": stats[0].item() / count, "train_acc": stats[1].item() / count,
            "test_loss": test_loss, "test_acc": test_acc, "epoch_time_s": round(time.perf_counter() - started, 3),
        }
        # the method's parts (each CE and KD term), epoch means over the training samples
        row.update({f"train_{n}": stats[3 + i].item() / count for i, n in enumerate(part_names)})
        history.append(row)
        rng_states = _gather_rng_states(world)
        if rank == 0:
            try:
                runs.atomic_torch_save({
                    "format": runs.CHECKPOINT_FORMAT, "config": config, "epoch": epoch + 1, "history": history,
                    "model": model.state_dict(), "method": net.extras.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_states,
                }, ckpt_path)
                runs.write_metrics(args.out, history)
                progress.saved = epoch + 1
            except OSError as e:
                kept = f"the checkpoint of epoch {epoch} is kept" if epoch > 0 else "no checkpoint was kept"
                raise _fail(f"could not write the checkpoint of epoch {epoch + 1} to {ckpt_path} ({e}); {kept}: "
                            f"free space or fix the folder, then continue with --resume")
            print(f"epoch {epoch + 1}/{args.epochs}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
                  f"test acc {row['test_acc']:.4f}  lam {row['lam']:.3f}  ({row['epoch_time_s']:.1f} s)",
                  file=sys.stderr)
        if world > 1:
            dist.barrier()
        if args.stop_after_epoch == epoch + 1:
            return 0
    if rank == 0:
        print(f"tks-train: run folder {os.path.abspath(args.out)} (config.json, metrics.csv, checkpoint.pt); "
              f"evaluate it with: tks-eval {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
