"""The demo's training loop written out: a CNN on the digits, recorded at two layers per epoch.

This is what ``latentlens demo`` runs, without the wrapper, for copying into your own loop: record
the validation pass, then publish it with the predictions as extra projector columns.

Run:  python examples/digits_cnn_loop.py --logdir runs/digits-loop
Then: tensorboard --logdir runs/digits-loop
"""

import argparse

import numpy as np
import torch

from latentlens import LatentLens
from latentlens.demo import DigitsCNN, evaluate_digits_cnn, load_digits_split, sprite_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/digits-loop", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    args = parser.parse_args()

    torch.manual_seed(0)
    split = load_digits_split(seed=0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.from_numpy(split.train_images)
    labels = torch.from_numpy(split.train_labels)
    thumbnails = sprite_images(split.validation_images)

    lens = LatentLens(
        model,
        layers=["features", "penultimate"],
        logdir=args.logdir,
        run="digits",
        step_column="epoch",
    )
    with lens:
        for epoch in range(1, args.epochs + 1):
            model.train()
            for batch in torch.randperm(len(images)).split(64):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
                loss.backward()
                optimizer.step()

            with lens.record(step=epoch, labels=split.validation_labels, images=thumbnails):
                result = evaluate_digits_cnn(model, split, epoch)
            correct = np.where(result.predictions == split.validation_labels, "yes", "no")
            reports = lens.publish(
                epoch, metadata={"predicted": result.predictions, "correct": correct}
            )
            lens.writer.add_scalar("validation/accuracy", result.validation_accuracy, step=epoch)

            drift = reports["penultimate"].drift
            drift_text = "reference" if drift is None else f"drift p={drift.p_value:.3f}"
            print(
                f"epoch {epoch}: accuracy {result.validation_accuracy:.3f}, "
                f"penultimate {drift_text}"
            )
    print(f"tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
