"""Plots, live widgets and static (kernel-free) sliders.

Every interactive figure in the book is one *render function* ``render(**settings) -> Figure`` and a grid
of settings. The same function drives

* :func:`live_explorer` — ipywidgets sliders that call ``render`` on every change (Jupyter, Colab), and
* :func:`static_explorer` — HTML sliders over frames precomputed for every point of the grid, which keep
  working on the static website with no kernel (plain HTML + a few lines of JavaScript, no CDN).

A render function that raises :class:`~metalearn_core.errors.MetaLearnError` (e.g. a diverging α) gets a
frame that shows the message instead of a plot with NaNs.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import uuid
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .errors import ConfigError, MetaLearnError

if TYPE_CHECKING:                      # only for the annotations; torch is imported where it is used
    import torch

__all__ = ["COLORS", "log_y", "new_figure", "message_figure", "plot_adaptation_curves", "plot_learning_curves",
           "plot_sinusoid_tasks", "plot_adapted_functions",
           "plot_characters", "plot_episode", "plot_misclassified", "plot_oneshot_run", "html_table", "figure_to_data_uri", "static_explorer", "live_explorer",
           "plot_learned_rates", "plot_update_rule", "plot_finetune_curves", "plot_embedding_projection",
           "plot_validation_curves"]

COLORS = {"MAML": "C0", "FOMAML": "C1", "Reptile": "C2", "JointTraining": "C3", "pre-trained": "C3",
          "ProtoNet": "C4"}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw):
    """A ``Figure`` (not attached to pyplot, so precomputing many frames leaks nothing) and its axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, (axes[0, 0] if nrows * ncols == 1 else axes.ravel())


def message_figure(message: str, title: str = "No plot for these settings") -> Figure:
    """A figure that shows a message (used when a setting diverges) instead of a broken plot."""
    fig, ax = new_figure(width=8.0, height=3.0)
    ax.axis("off")
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=14, weight="bold", color="#b00020",
            transform=ax.transAxes)
    ax.text(0.5, 0.35, _wrap(message, 90), ha="center", va="center", fontsize=10, transform=ax.transAxes)
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def _color(label: str, i: int) -> str:
    return COLORS.get(label.split(" ")[0].rstrip(":,"), f"C{i % 10}")


def log_y(ax) -> None:
    """Log-scale y axis with plain tick labels (0.5, 2, 10 rather than 5×10⁻¹); minor ticks are labelled
    (2, 3, 5 × 10ⁿ) only when the axis spans less than two decades, so labels never crowd."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")

    def major(v, _):
        return f"{v:g}"

    def minor(v, _):
        lo, hi = ax.get_ylim()
        if lo <= 0 or np.log10(hi / lo) > 2:
            return ""
        mantissa = round(v / 10 ** np.floor(np.log10(v)), 6)
        return f"{v:g}" if mantissa in (2.0, 3.0, 5.0) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(major))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


_METRIC_NAMES = {"mse": "MSE", "accuracy": "accuracy"}
_KEY_LABELS = {"loss": "meta-objective: loss after adaptation", "loss_before": "loss at θ (no adaptation)"}


def plot_adaptation_curves(curves, ax=None, *, title: str | None = None, logy: bool = False,
                           reference: Mapping[str, Mapping[int, float]] | None = None):
    """Mean query loss after 0..k inner steps with a shaded 95% CI, one line per curve.

    ``reference`` optionally maps a label to published values ``{step: value}``, drawn as hollow markers.
    """
    fig = None
    if ax is None:
        fig, ax = new_figure()
    # on a log axis a band reaching down to zero or below cannot be drawn: clip it at a third of the
    # smallest mean shown, so it reads as "extends below the axis" instead of flooding the plot
    floor = min((float(np.min(c.mean)) for c in curves), default=1.0) / 3 if logy else -np.inf
    for i, c in enumerate(curves):
        col = _color(c.label, i)
        left_out = c.tasks_at(len(c.mean) - 1)[1] if hasattr(c, "tasks_at") else 0
        note = f", {left_out} diverged by step {len(c.mean) - 1}" if (left_out and c.kept is not None) else ""
        ax.plot(c.steps, c.mean, "o-", ms=3, color=col, label=f"{c.label} ({c.n_tasks} tasks{note})")
        ax.fill_between(c.steps, np.maximum(c.mean - c.ci95, floor), c.mean + c.ci95, color=col, alpha=0.2, lw=0)
    for j, (label, pts) in enumerate((reference or {}).items()):
        ks = sorted(pts)
        ax.plot(ks, [pts[k] for k in ks], "s", mfc="none", color=_color(label, j), ms=8,
                label=f"{label} (published)")
    ax.set_xlabel("inner gradient steps at test time")
    metric = _METRIC_NAMES.get(curves[0].metric, curves[0].metric) if curves else "loss"
    ax.set_ylabel(f"query {metric} (mean ± 95% CI)")
    if logy:
        log_y(ax)
    ax.set_title(title or "Adaptation curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig if fig is not None else ax.figure


def plot_learning_curves(histories: Mapping[str, object], ax=None, *, key: str = "loss", title=None,
                         logy: bool = True, ylabel: str | None = None):
    """Meta-training curves: ``histories`` maps a label to a :class:`~metalearn_core.training.History`.

    Each point is the mean of ``key`` over one logging interval (``log_every`` iterations) of meta-batches.
    """
    fig = None
    if ax is None:
        fig, ax = new_figure()
    for i, (label, h) in enumerate(histories.items()):
        ax.plot(h.iterations, h.metrics[key], color=_color(label, i), label=label)
    ax.set_xlabel("meta-training iteration")
    ax.set_ylabel(ylabel or _KEY_LABELS.get(key, key.replace("_", " ")))
    if logy:
        log_y(ax)
    ax.set_title(title or "Meta-training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig if fig is not None else ax.figure


def plot_sinusoid_tasks(batch, n: int = 4, ax=None, *, show_query: bool = True, title=None):
    """Draw the true functions of the first ``n`` tasks of a sinusoid :class:`TaskBatch` with their points."""
    import torch

    from .tasks import SinusoidTasks

    fig = None
    if ax is None:
        fig, ax = new_figure(width=7.5)
    x = torch.linspace(-5, 5, 200)
    for i in range(min(n, batch.n_tasks)):
        a, p = batch.info["amplitude"][i], batch.info["phase"][i]
        ax.plot(x, SinusoidTasks.function(a, p, x), color=f"C{i}", lw=1.2,
                label=f"A={float(a):.2f}, φ={float(p):.2f}")
        ax.plot(batch.x_support[i, :, 0], batch.y_support[i, :, 0], "o", color=f"C{i}", ms=5)
        if show_query:
            ax.plot(batch.x_query[i, :, 0], batch.y_query[i, :, 0], "x", color=f"C{i}", ms=5, alpha=0.6)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title or "Sinusoid tasks: support (●) and query (×) points")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="task", title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig if fig is not None else ax.figure


def plot_adapted_functions(learner, params, task, *, steps=(0, 1, 10), alpha: float | None = None, ax=None,
                           title: str | None = None, color: str | None = None, xlim=(-5.0, 5.0)):
    """The prediction of ``params`` on a 1-D regression task before and after some inner steps.

    ``task`` is a one-task :class:`~metalearn_core.tasks.TaskBatch` of a sinusoid family (its true function is
    drawn from ``info``); its support points are drawn as triangles. Lines get darker with more steps, and
    each count has its own line style (dashed before adaptation, then dotted, dash-dotted, solid).
    """
    import torch

    from .tasks import SinusoidTasks

    fig = None
    if ax is None:
        fig, ax = new_figure()
    x = torch.linspace(*xlim, 200)
    a, ph = float(task.info["amplitude"][0]), float(task.info["phase"][0])
    ax.plot(x, SinusoidTasks.function(a, ph, x), color="k", lw=2.2, alpha=0.3, label="true function")
    xs, ys = task.x_support[0], task.y_support[0]
    p = {k: v.detach() for k, v in params.items()}
    done = 0
    shades = np.linspace(0.4, 1.0, len(steps))
    base = color or "C0"
    ordered = sorted(steps)
    adapted_styles = iter([":", "-.", "-"][-sum(k > 0 for k in ordered):] if any(k > 0 for k in ordered) else [])
    for shade, k in zip(shades, ordered):
        p = learner.adapt(p, xs, ys, steps=k - done, alpha=alpha)
        done = k
        with torch.no_grad():
            pred = learner.model(p, x[:, None])[:, 0]
        style = "--" if k == 0 else next(adapted_styles, "-")
        ax.plot(x, pred, color=base, alpha=float(shade), lw=1.7, ls=style,
                label="before adaptation" if k == 0 else f"after {k} step{'s' if k != 1 else ''}")
    ax.plot(xs[:, 0], ys[:, 0], "k^", ms=7, label=f"K={xs.shape[0]} support points")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title or learner.describe(), fontsize=10)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    ax.grid(alpha=0.3)
    return fig if fig is not None else ax.figure


# ---- Omniglot pictures ----------------------------------------------------------------------------------

def _image(ax, img, title=None, frame=None, fontsize=8):
    """Draw one ``[1, H, W]`` or ``[H, W]`` image with ink dark on white; ``frame`` colours its border."""
    img = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, dtype=float)
    ax.imshow(img.reshape(img.shape[-2:]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(frame is not None)
        if frame is not None:
            side.set_color(frame)
            side.set_linewidth(2.5)
    if title:
        ax.set_title(title, fontsize=fontsize, pad=2)


def plot_characters(images, rows: Sequence[int], *, drawers: int = 6, labels: Sequence[str] | None = None,
                    title: str | None = None):
    """A grid: one row per character index in ``rows`` of :class:`~metalearn_core.data.OmniglotImages`,
    showing the first ``drawers`` people's drawings of it (``labels`` names the rows)."""
    fig, axes = new_figure(drawers, len(rows), width=0.95, height=1.05)
    axes = np.asarray(axes).reshape(len(rows), drawers)
    for i, c in enumerate(rows):
        for j in range(drawers):
            _image(axes[i, j], images.images[c, j].float() / 255)
        name = labels[i] if labels is not None else images.characters[c]
        axes[i, 0].set_ylabel(name.replace("_", " "), rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_episode(batch, index: int = 0, *, predictions=None, max_queries: int = 5, title: str | None = None):
    """One episode of a classification :class:`TaskBatch`: a column per class, its support image(s) on top
    and up to ``max_queries`` query images below. With ``predictions`` (labels of the query examples), a wrong
    prediction gets a red frame and the predicted label."""
    ys, yq = batch.y_support[index], batch.y_query[index]
    ways = int(ys.max()) + 1
    shots = int((ys == 0).sum())
    queries = min(max_queries, int((yq == 0).sum()))
    fig, axes = new_figure(ways, shots + queries, width=1.0, height=1.08)
    axes = np.asarray(axes).reshape(shots + queries, ways)
    for c in range(ways):
        sup = batch.x_support[index][ys == c]
        for k in range(shots):
            _image(axes[k, c], sup[k], title=f"class {c}" if k == 0 else None, frame="#333333")
        where = (yq == c).nonzero().flatten()[:queries]
        for r, q in enumerate(where.tolist()):
            wrong = predictions is not None and int(predictions[q]) != c
            _image(axes[shots + r, c], batch.x_query[index][q], frame="#b00020" if wrong else None,
                   title=f"→ {int(predictions[q])}" if wrong else None)
    axes[0, 0].set_ylabel("support", fontsize=8)
    axes[shots, 0].set_ylabel("query", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_misclassified(examples: Sequence[dict], *, columns: int = 2, title: str | None = None):
    """A gallery of mistakes: each example (a dict with ``query``, ``true_support``, ``predicted_support``
    images and optionally ``label``) is drawn as three images: the query, the support image of its class and
    the support image of the class it was given."""
    n = len(examples)
    if n == 0:
        return message_figure("no misclassified queries in these episodes", title="Nothing to show")
    rows = int(np.ceil(n / columns))
    fig, axes = new_figure(3 * columns, rows, width=0.95, height=1.15)
    axes = np.asarray(axes).reshape(rows, 3 * columns)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ex in enumerate(examples):
        r, c = divmod(i, columns)
        trio = axes[r, 3 * c:3 * c + 3]
        for ax in trio:
            ax.axis("on")
        _image(trio[0], ex["query"], title=ex.get("label", "query"), frame="#b00020")
        _image(trio[1], ex["true_support"], title="its class", frame="#1b7f3b")
        _image(trio[2], ex["predicted_support"], title="picked", frame="#333333")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_oneshot_run(run, predictions=None, *, items: Sequence[int] = (0, 1, 2, 3), title: str | None = None):
    """One of Lake et al.'s one-shot runs: its 20 training images (one per character), then test items with the
    training image each one belongs to and, given ``predictions``, the one picked (red when wrong)."""
    n_train = run.train.shape[0]
    cols = 10
    rows_train = int(np.ceil(n_train / cols))
    fig, axes = new_figure(cols, rows_train + len(items), width=0.9, height=1.0)
    axes = np.asarray(axes).reshape(rows_train + len(items), cols)
    for ax in axes.ravel():
        ax.axis("off")
    for j in range(n_train):
        ax = axes[j // cols, j % cols]
        ax.axis("on")
        _image(ax, run.train[j], title=f"{j}", frame="#333333")
    for r, i in enumerate(items):
        row = axes[rows_train + r]
        answer = int(run.answers[i])
        row[0].axis("on")
        _image(row[0], run.test[i], title=f"test item {i + 1}")
        row[1].axis("on")
        _image(row[1], run.train[answer], title=f"answer: {answer}", frame="#1b7f3b")
        if predictions is not None:
            pick = int(predictions[i])
            row[2].axis("on")
            _image(row[2], run.train[pick], title=f"picked: {pick}",
                   frame="#1b7f3b" if pick == answer else "#b00020")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


#: cells of :func:`html_table` longer than this (characters) may wrap
WRAP_AFTER = 24


def html_table(header: Sequence[str], lines: Sequence[Sequence[object]], *, caption: str | None = None,
               notes: Sequence[str] = (), align_left: int = 1):
    """A plain HTML table for notebooks and the website (``IPython.display.HTML``).

    The first ``align_left`` columns are left-aligned (labels), the others right-aligned (numbers). Cell text is
    escaped, so write maths in Unicode (α, β, π), not LaTeX. ``notes`` are printed under the table. Short cells
    (numbers, names) never break; cells longer than ``WRAP_AFTER`` characters may wrap onto a second line. A
    notebook cell whose table has many columns carries the ``full-width`` tag, which lets the website show it in
    the page's right margin too, so that it fits a 1,200-pixel window instead of hiding its last columns behind a
    scroll bar.
    """
    from IPython.display import HTML

    def cell(i, c, tag):
        text = str(c)
        wrap = "white-space:normal;min-width:9em" if len(text) > WRAP_AFTER else "white-space:nowrap"
        return (f'<{tag} style="text-align:{"left" if i < align_left else "right"};padding:.2em .45em;{wrap}">'
                f"{html.escape(text)}</{tag}>")

    def row(cells, tag):
        return "<tr>" + "".join(cell(i, c, tag) for i, c in enumerate(cells)) + "</tr>"

    # The caption is a block above the table, not a <caption>: a <caption> is as wide as its table, so on a
    # narrow page a long one would wrap at the table's width and run out of sight inside the scrolled box.
    cap = f'<div class="ml-caption" style="font-weight:bold">{html.escape(caption)}</div>' if caption else ""
    body = "".join(row(line, "td") for line in lines)
    foot = "".join(f'<div style="font-size:85%;color:#555">{html.escape(n)}</div>' for n in notes)
    return HTML(f'<div class="ml-table">{cap}<div style="overflow-x:auto"><table style="border-collapse:collapse;'
                f'margin:.4em 0;font-size:86%"><thead>{row(header, "th")}</thead><tbody>{body}</tbody></table></div>'
                f'{foot}</div>')


def figure_to_data_uri(fig: Figure, dpi: int = 80, colors: int | None = 128) -> str:
    """PNG of ``fig`` as a ``data:`` URI (self-contained: no file, no network).

    With ``colors`` (default 128) the image is reduced to a palette of that many colours, which makes plots
    about four times smaller with no visible change; ``colors=None`` keeps full colour.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if colors:
        from PIL import Image

        buf.seek(0)
        image = Image.open(buf).convert("RGB").quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _render_safely(render: Callable[..., Figure], settings: dict) -> Figure:
    try:
        return render(**settings)
    except MetaLearnError as exc:
        return message_figure(str(exc))


def _check_grid(grid: Mapping[str, Sequence]) -> dict[str, list]:
    if not grid:
        raise ConfigError("an explorer needs at least one setting to slide over")
    out = {}
    for name, values in grid.items():
        values = list(values)
        if not values:
            raise ConfigError(f"setting {name!r} of the explorer has no values")
        out[name] = values
    return out


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def static_explorer(render: Callable[..., Figure], grid: Mapping[str, Sequence], *, labels=None,
                    initial: Mapping | None = None, title: str = "", dpi: int = 80, progress: bool = True):
    """HTML sliders over frames precomputed for every combination of ``grid`` (works without a kernel).

    Args:
        render: ``render(**settings) -> Figure``.
        grid: ``{"alpha": [0.01, 0.1], "steps": [1, 5]}``: one slider per setting, in this order.
        labels: optional display names (e.g. ``{"alpha": "α"}``).
        initial: settings shown first (default: the first value of each).

    Returns an ``IPython.display.HTML`` object (display it, or let it be a cell's last value).
    """
    from IPython.display import HTML
    from tqdm import tqdm

    grid = _check_grid(grid)
    labels = dict(labels or {})
    names = list(grid)
    initial = dict(initial or {})
    start = []
    for n in names:
        v = initial.get(n, grid[n][0])
        if v not in grid[n]:
            raise ConfigError(f"initial value {v!r} of {n!r} is not one of the grid values {grid[n]}")
        start.append(grid[n].index(v))
    frames = {}
    combos = list(itertools.product(*(range(len(grid[n])) for n in names)))
    for idx in tqdm(combos, desc="precomputing frames", disable=not progress, leave=False):
        fig = _render_safely(render, {n: grid[n][i] for n, i in zip(names, idx)})
        frames[",".join(map(str, idx))] = figure_to_data_uri(fig, dpi)
    uid = "mlx-" + uuid.uuid4().hex[:10]
    controls = []
    for n, i0 in zip(names, start):
        shown = [_fmt(v) for v in grid[n]]
        controls.append(
            f'<label style="margin-right:1.5em;white-space:nowrap">{html.escape(labels.get(n, n))} '
            f'<input type="range" class="ml-static-slider" data-name="{html.escape(n)}" min="0" '
            f'max="{len(grid[n]) - 1}" step="1" value="{i0}" style="vertical-align:middle" '
            f'aria-label="{html.escape(labels.get(n, n))}" data-values=\'{html.escape(json.dumps(shown))}\'> '
            f'<span class="ml-static-value" style="font-family:monospace">{html.escape(shown[i0])}</span></label>')
    key0 = ",".join(map(str, start))
    title_html = f'<div style="font-weight:bold;margin-bottom:.3em">{html.escape(title)}</div>' if title else ""
    script = (
        "(function(){var root=document.getElementById(%s);var frames=%s;"
        "var sliders=root.querySelectorAll('input.ml-static-slider');var img=root.querySelector('img.ml-static-frame');"
        "function update(){var key=[];sliders.forEach(function(s){key.push(s.value);"
        "var vals=JSON.parse(s.getAttribute('data-values'));s.parentNode.querySelector('.ml-static-value').textContent=vals[+s.value];});"
        "var src=frames[key.join(',')];if(src){img.src=src;}}"
        "sliders.forEach(function(s){s.addEventListener('input',update);s.addEventListener('change',update);});})();"
    ) % (json.dumps(uid), json.dumps(frames))
    body = (f'<div class="ml-static-explorer" id="{uid}" style="border:1px solid #ddd;border-radius:6px;'
            f'padding:.6em;margin:.5em 0">{title_html}<div class="ml-static-controls" style="margin-bottom:.4em">'
            f'{"".join(controls)}</div><img class="ml-static-frame" alt="{html.escape(title or "figure")}" '
            f'style="max-width:100%" src="{frames[key0]}"><div style="font-size:80%;color:#666">Precomputed for '
            f'{len(frames)} combinations of settings: the sliders work without a running kernel.</div>'
            f'<script>{script}</script></div>')
    return HTML(body)


def live_explorer(render: Callable[..., Figure], grid: Mapping[str, Sequence], *, labels=None,
                  initial: Mapping | None = None, continuous_update: bool = False,
                  buttons: Mapping[str, Callable[[dict], None]] | None = None):
    """ipywidgets sliders (one per setting of ``grid``) that redraw ``render(**settings)`` on change.

    Settings that raise a :class:`~metalearn_core.errors.MetaLearnError` show its message, not a plot.
    ``buttons`` maps a button's text to ``fn(sliders)``, called on click with the dict of sliders (e.g. to
    move the "task" slider to a new task). Returns the widget box (display it, or let it be a cell's last
    value); ``box.redraw()``, ``box.sliders`` and ``box.buttons`` let tests drive it without a browser.
    """
    import ipywidgets as W
    from IPython.display import display

    grid = _check_grid(grid)
    labels = dict(labels or {})
    initial = dict(initial or {})
    sliders = {n: W.SelectionSlider(options=[(_fmt(v), v) for v in vals], value=initial.get(n, vals[0]),
                                    description=labels.get(n, n), continuous_update=continuous_update,
                                    style={"description_width": "initial"})
               for n, vals in grid.items()}
    out = W.Output()
    button_widgets = {}
    for text, fn in (buttons or {}).items():
        b = W.Button(description=text)
        b.on_click(lambda _b, fn=fn: fn(sliders))
        button_widgets[text] = b
    box = W.VBox([W.HBox(list(sliders.values()) + list(button_widgets.values())), out])

    def redraw(*_):
        fig = _render_safely(render, {n: s.value for n, s in sliders.items()})
        box.figure = fig  # the figure on show, for tests and for saving
        out.clear_output(wait=True)
        with out:
            display(fig)

    for s in sliders.values():
        s.observe(redraw, names="value")
    box.redraw = redraw  # exposed so tests (and curious readers) can trigger a redraw without a browser
    box.sliders = sliders
    box.buttons = button_widgets
    redraw()
    return box


def plot_learned_rates(rates: Mapping[str, "torch.Tensor"], initial: float, ax=None, *, title: str | None = None,
                       max_tensors: int = 20):
    """Meta-SGD's learned inner learning rates, one box per parameter tensor (in network order), with the
    initial value as a dashed line. ``rates`` maps a parameter name to its tensor of rates
    (:meth:`~metalearn_core.algorithms.MetaSGD.rates`)."""
    fig = None
    if ax is None:
        fig, ax = new_figure(width=max(4.5, 0.55 * min(len(rates), max_tensors) + 2), height=3.4)
    names = list(rates)[:max_tensors]
    data = [rates[n].detach().double().reshape(-1).numpy() for n in names]
    ax.boxplot(data, showfliers=True, flierprops=dict(ms=2, alpha=0.4), medianprops=dict(color="C4"))
    ax.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right", fontsize=7)
    ax.axhline(initial, ls="--", color="0.4", lw=1, label=f"initial α = {initial:g}")
    if min(float(d.min()) for d in data) < 0.25 * initial:
        ax.axhline(0, color="0.6", lw=0.8)          # some rates near or below zero: show where the sign flips
    ax.set_ylabel("learned inner learning rate")
    ax.set_title(title or "Meta-SGD: learned α per parameter tensor", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return fig if fig is not None else ax.figure


def plot_update_rule(learner, params, ax=None, *, scales=(1e-3, 1e-1, 10.0), title: str | None = None):
    r"""What a :class:`~metalearn_core.algorithms.LearnedUpdate` network learned: the whole step per unit of
    gradient scale, :math:`(-\alpha\,\partial L + \gamma g_\phi)/r_W`, against the normalised gradient
    :math:`\partial L / r_W`, for parameters at 0 and for several gradient scales :math:`r_W`. Plain gradient
    descent is the straight line of slope −α."""
    import torch

    fig = None
    if ax is None:
        fig, ax = new_figure(width=5.0, height=3.6)
    _, meta = learner.model.split(params)
    u = torch.linspace(-3, 3, 121, dtype=next(iter(meta.values())).dtype)
    u = u / torch.sqrt((u * u).mean())                  # normalised gradients of a tensor (rms 1): −1.7..1.7
    for i, r in enumerate(scales):
        g = u * r                                        # a gradient tensor whose rms is exactly r
        with torch.no_grad():
            step = -learner.alpha * g + learner.gamma * learner.direction(meta, g, torch.zeros_like(g))
        ax.plot((g / r).numpy(), (step / r).numpy(), color=f"C{i}", label=f"gradient scale r = {r:g}")
    ax.plot(u.numpy(), (-learner.alpha * u).numpy(), "k--", lw=1, label=f"gradient descent (slope −α = {-learner.alpha:g})")
    ax.set(xlabel="normalised gradient ∂L / r", ylabel="step / r")
    ax.set_title(title or "The learned update rule", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig if fig is not None else ax.figure


def plot_finetune_curves(curves: Mapping[str, dict], ax=None, *, key: str = "val_accuracy", title: str | None = None,
                         ylabel: str | None = None, percent: bool = True):
    """Learning curves of fine-tuning runs: ``curves`` maps a label to a
    :attr:`~metalearn_core.finetune.FineTuneResult.curve` (``{"step": [...], key: [...]}``)."""
    fig = None
    if ax is None:
        fig, ax = new_figure(width=6.0, height=3.6)
    scale = 100.0 if percent and "accuracy" in key else 1.0
    for i, (label, c) in enumerate(curves.items()):
        if key not in c or not c[key]:
            continue
        ax.plot(c["step"], scale * np.asarray(c[key], dtype=float), "-", lw=1.5, color=f"C{i % 10}", label=label)
    ax.set_xlabel("fine-tuning step")
    default = {"val_accuracy": "validation accuracy (%)", "train_loss": "training loss",
               "val_loss": "validation loss", "train_accuracy": "training accuracy (%)"}
    ax.set_ylabel(ylabel or default.get(key, key.replace("_", " ")))
    ax.set_title(title or "Fine-tuning", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig if fig is not None else ax.figure


def plot_embedding_projection(projections: Mapping[str, Sequence], labels: Sequence[int], *, title: str | None = None,
                              class_names: Sequence[str] | None = None):
    """Side-by-side 2-D projections of the same images' embeddings (e.g. before and after fine-tuning), one
    colour per class: ``projections`` maps a panel title to ``[n, 2]`` coordinates."""
    labels = np.asarray(labels)
    fig, axes = new_figure(ncols=len(projections), width=4.2, height=4.0)
    axes = np.atleast_1d(axes)
    for ax, (name, xy) in zip(axes, projections.items()):
        xy = np.asarray(xy, dtype=float)
        if xy.ndim != 2 or xy.shape != (labels.size, 2):
            raise ConfigError(f"projection {name!r} must be [n, 2] for the {labels.size} labels, got {list(xy.shape)}")
        for c in np.unique(labels):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=6, color=f"C{int(c) % 10}", alpha=0.7,
                       label=str(class_names[c]) if class_names is not None else str(int(c)))
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_validation_curves(curves: Mapping[str, dict], *, title: str | None = None,
                           styles: Mapping[str, dict] | None = None):
    """Validation accuracy while training, against meta-training iterations (left) and against wall-clock minutes
    (right: what each minute of a laptop bought), one line per network. Each curve is a dict with ``iterations``,
    ``minutes`` and ``accuracy`` (percent) and optionally ``best_iteration``, the kept checkpoint, which is
    circled. ``styles`` optionally gives matplotlib keywords per name (colour, line style)."""
    fig, (ax1, ax2) = new_figure(ncols=2, width=4.8, height=3.6)
    if not curves:
        return message_figure("No validation curves to draw", title or "Validation while training")
    for i, (name, v) in enumerate(curves.items()):
        style = {"color": _color(name, i), "marker": "o", "ms": 2.5, "lw": 1.3, **(styles or {}).get(name, {})}
        acc = np.asarray(v["accuracy"], dtype=float)
        ax1.plot(v["iterations"], acc, label=name, **style)
        if v.get("minutes"):
            ax2.plot(v["minutes"], acc, label=name, **style)
        best = v.get("best_iteration")
        if best in v["iterations"]:
            j = v["iterations"].index(best)
            ax1.plot([best], [acc[j]], "o", ms=8, mfc="none", mec=style["color"])
            if v.get("minutes"):
                ax2.plot([v["minutes"][j]], [acc[j]], "o", ms=8, mfc="none", mec=style["color"])
    ax1.set_xlabel("meta-training iteration")
    ax2.set_xlabel("training minutes (two cores, two networks at a time)")
    ax1.set_ylabel("validation accuracy (%)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=1, loc="lower right")
    fig.suptitle(title or "Validation accuracy while training (circled: the checkpoint kept)", fontsize=10)
    return fig
