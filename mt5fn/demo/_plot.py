"""The demo's loss curve as a PNG (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os


def require_matplotlib() -> None:
    """Fail before any work when matplotlib is missing, with the install command."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("mt5fn demo draws its loss curve with matplotlib, which is not installed: "
                           "pip install 'mt5fn[train]' (or pip install matplotlib)") from None


def plot_losses(steps: list[int], losses: list[float], path: str, title: str) -> str:
    """Write the training-loss curve (log scale, with a running mean) to ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1): i + 1]) / (i + 1 - max(0, i - window + 1))
              for i in range(len(losses))]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    axes.plot(steps, losses, color="#9bb8d3", linewidth=0.8, label="loss per step")
    axes.plot(steps, smooth, color="#1f4e79", linewidth=1.8, label=f"running mean ({window} steps)")
    axes.set_yscale("log")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy (nats / target token)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, path)
    return path
