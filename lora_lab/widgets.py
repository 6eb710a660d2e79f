"""Sliders over precomputed results: moving one looks its answer up and redraws, nothing is retrained or requantized.

A notebook computes a small grid once (`precompute`), then hands a `render` function that only reads
that grid to `SliderPanel`. Each view is drawn once and cached, so a slider answers at once even on a
2-core CPU. Widgets do not render on GitHub or nbviewer: follow every panel with a static figure or table.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from .i18n import _, format_number


def precompute(fn: Callable[..., Any], **axes: Sequence) -> dict[tuple, Any]:
    """fn(**point) at every point of the grid spanned by `axes`; keys are value tuples in the axes' order."""
    if not axes:
        raise ValueError("precompute needs at least one axis, e.g. precompute(fn, r=[1, 4, 16])")
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"axis {name}={values!r} is not accepted; give a non-empty list of values")
    names = list(axes)
    return {point: fn(**dict(zip(names, point))) for point in itertools.product(*axes.values())}


def figure_png(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed so notebooks don't pile them up."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _option(value) -> str:
    """A slider stop's label: a number in the kit's language (0.5 or 0,5), anything else as str() writes it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


class SliderPanel(widgets.VBox):
    """One slider per control (a toggle for True/False); each move calls render(**values) -> html or (html, figure).

    Views are cached per position, so moving back to a drawn position costs nothing.
    """

    def __init__(self, render: Callable[..., Any], controls: dict[str, Sequence], initial: dict | None = None,
                 labels: dict[str, str] | None = None, dpi: int = 80):
        if not controls:
            raise ValueError("SliderPanel needs at least one control, e.g. {'r': [1, 2, 4, 8]}")
        initial, labels = initial or {}, labels or {}
        unknown = set(initial) - set(controls)
        if unknown:
            raise ValueError(f"initial values for unknown controls {sorted(unknown)}; controls are {list(controls)}")
        self.render, self.dpi, self._cache = render, dpi, {}
        self.sliders = {}
        for name, options in controls.items():
            options = list(options)
            if not options:
                raise ValueError(f"control {name!r} has no values")
            value = initial.get(name, options[0])
            if value not in options:
                raise ValueError(f"initial {name}={value!r} is not one of its values {options}")
            style, label = {"description_width": "initial"}, labels.get(name, name)
            if sorted(options, key=str) == [False, True] and all(isinstance(o, bool) for o in options):
                self.sliders[name] = widgets.ToggleButtons(  # an on/off setting: a toggle, not a two-stop slider
                    options=[(_("on"), True), (_("off"), False)], value=value, description=label, style=style)
            else:
                self.sliders[name] = widgets.SelectionSlider(
                    options=[(_option(o), o) for o in options], value=value, description=label,
                    continuous_update=True, style=style, layout=widgets.Layout(width="420px"))
        self.text = widgets.HTML()
        self.image = widgets.Image(format="png")
        super().__init__([*self.sliders.values(), self.text, self.image])
        for slider in self.sliders.values():
            slider.observe(self._update, names="value")
        self._update()

    @property
    def values(self) -> dict[str, Any]:
        """The current position of every slider, by control name."""
        return {name: s.value for name, s in self.sliders.items()}

    def _view(self, key: tuple) -> tuple[str, bytes | None]:
        if key not in self._cache:
            out = self.render(**dict(zip(self.sliders, key)))
            html, fig = out if isinstance(out, tuple) else (out, None)
            self._cache[key] = (str(html), None if fig is None else figure_png(fig, self.dpi))
        return self._cache[key]

    def _update(self, change=None) -> None:
        html, png = self._view(tuple(self.values.values()))
        self.text.value = html
        self.image.layout.display = "none" if png is None else None
        if png is not None:
            self.image.value = png
