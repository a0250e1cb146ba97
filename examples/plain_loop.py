"""A plain PyTorch training loop with three added lines of latentlens.

The model is a small MLP on scikit-learn's digits. The three lines marked ``# latentlens`` create
the lens, attach it for the duration of training, and record the validation pass of every epoch.
With ``publish_every=1`` each epoch is published when the next one starts, and the last one when
the lens closes.

Run:  python examples/plain_loop.py --logdir runs/plain-loop
Then: tensorboard --logdir runs/plain-loop
"""

import argparse

import torch
from torch import nn

from latentlens import LatentLens
from latentlens.demo import load_digits_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/plain-loop", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    args = parser.parse_args()

    torch.manual_seed(0)
    split = load_digits_split(seed=0)
    train_x = torch.from_numpy(split.train_images).flatten(1)
    train_y = torch.from_numpy(split.train_labels)
    val_x = torch.from_numpy(split.validation_images).flatten(1)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    lens = LatentLens(model, layers=["1", "3"], logdir=args.logdir, publish_every=1)  # latentlens
    with lens:  # latentlens
        for epoch in range(args.epochs):
            model.train()
            for batch in torch.randperm(len(train_x)).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(train_x[batch]), train_y[batch]).backward()
                optimizer.step()
            model.eval()
            with (
                torch.no_grad(),
                lens.record(step=epoch, labels=split.validation_labels),
            ):  # latentlens
                accuracy = (model(val_x).argmax(1).numpy() == split.validation_labels).mean()
            print(f"epoch {epoch}: validation accuracy {accuracy:.3f}")
    print(f"tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
