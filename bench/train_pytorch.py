"""PyTorch + diffusers training speed for the same UNet2DModel config kakusan trains.

Not run in CI. Usage (the fixture venv has the pinned versions, tests/fixtures/requirements.txt):

    python bench/train_pytorch.py --config <config.json> --batch 64 --steps 5 --threads 2

Prints images/s of full training steps (q_sample, forward, MSE loss, backward, gradient
clipping, AdamW, EMA), on the embedded MNIST digits (assets/mnist/mnist10k.safetensors),
matching `kakusan train`'s step. Compare with the images/s that `kakusan train` prints.
"""
import argparse
import json
import time

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="UNet2DModel config.json")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (scripts/gpu/run.sh)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = json.load(open(args.config))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = UNet2DModel(**cfg).to(dev)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=2 / 3)
    data = load_file("assets/mnist/mnist10k.safetensors")
    images = data["images"].float().to(dev) / 127.5 - 1.0
    labels = data["labels"].long().to(dev)
    size = cfg.get("sample_size", 28)
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear")
    n = images.shape[0]

    def step():
        idx = torch.randint(0, n, (args.batch,), device=dev)
        x0, y = images[idx], labels[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (args.batch,), device=dev)
        x_t = sched.add_noise(x0, noise, t)
        kwargs = {"class_labels": y} if cfg.get("num_class_embeds") else {}
        pred = model(x_t, t, **kwargs).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.step(model.parameters())
        return loss.item()

    for _ in range(2):
        step()
    # step() ends in loss.item(), which waits for the device: the timing is whole steps.
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    print(
        f"torch {torch.__version__}, {args.device}, {args.threads} threads: {params} parameters, batch {args.batch}: "
        f"{args.steps * args.batch / dt:.1f} images/s ({dt / args.steps * 1000:.0f} ms/step)"
    )


if __name__ == "__main__":
    main()
