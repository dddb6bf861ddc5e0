"""ce vs ssnn training steps, interleaved (one step of each in turn) so that on a shared, loaded CPU
both see the same load; min and median over the steps, each as a ratio to ce's. The same step as
``bench_train_step.py --method ssnn`` (forward, loss, backward, AdamW), SSNN at its default schedule.

    PYTHONPATH=$PWD:$PWD/python python bench/notes/ssnn_step_interleaved.py [steps, default 20]
"""
import dataclasses, os, statistics, sys, time
import torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bench_train_step as B
from tks.data.common import DataInfo
from tks.methods import METHODS, MethodNet, build_method, resolve_hparams
from tks.models import NeuronConfig
torch.set_num_threads(2)
for model_name, batch, width in (("vggsnn", 1, 0.125), ("resnet19", 2, 0.125), ("vggsnn", 2, 0.5), ("resnet19", 4, 0.5)):
    spec = B.MODELS[model_name]; T, static = spec["T"], not spec["sequence"]
    info = DataInfo(model_name, 10, spec["in_channels"], spec["image_size"], static, model_name, 0.7 if static else 0.3, 3.0 if static else 5.0)
    steps = {}
    for name in ("ce", "ssnn"):
        hp = resolve_hparams(name, {}, info, T); m = build_method(name, hp, epochs=10, T=T, static=static)
        torch.manual_seed(0)
        cfg = dict(model=model_name, num_classes=10, in_channels=spec["in_channels"], image_size=spec["image_size"], width=width, T=T, neuron=dataclasses.asdict(NeuronConfig()), **hp)
        net = MethodNet(METHODS[name].build_model(cfg), m, info).train()
        g = torch.Generator().manual_seed(1); x, y = B.make_inputs(spec, batch, torch.device("cpu"), g)
        if not static: x = x.transpose(0, 1).contiguous()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        def step(net=net, m=m, x=x, y=y, opt=opt):
            opt.zero_grad(set_to_none=True); loss, _ = m.loss(net(x), y); loss.backward(); opt.step()
        step(); step()
        steps[name] = (step, getattr(net.model, "stage_T", ""))
    times = {k: [] for k in steps}
    for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
        for k, (f, _) in steps.items():
            t = time.perf_counter(); f(); times[k].append(1e3 * (time.perf_counter() - t))
    ce_min, ce_med = min(times["ce"]), statistics.median(times["ce"])
    for k in steps:
        mn, md = min(times[k]), statistics.median(times[k])
        print(f"{model_name} T={T} batch {batch} width {width:g} {k:5s} stage_T={steps[k][1]}  min {mn:8.1f} ms (x{mn/ce_min:.2f})  median {md:8.1f} ms (x{md/ce_med:.2f})", flush=True)
