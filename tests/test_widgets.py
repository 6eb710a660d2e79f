"""lora_lab.widgets (sliders over precomputed grids), with the lowrank and plots helpers the notebooks' widgets draw from."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lora_lab import lowrank, plots  # noqa: E402
from lora_lab.widgets import SliderPanel, figure_png, precompute  # noqa: E402

PNG = b"\x89PNG"


def test_precompute_covers_the_grid_in_axis_order():
    calls = []
    grid = precompute(lambda r, a: calls.append((r, a)) or r * a, r=[1, 2], a=[10, 20, 30])
    assert list(grid) == [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30)]
    assert grid[2, 30] == 60 and len(calls) == 6


@pytest.mark.parametrize("axes", [{}, {"r": []}, {"r": "abc"}, {"r": 3}])
def test_precompute_rejects_empty_or_non_list_axes(axes):
    with pytest.raises(ValueError):
        precompute(lambda **kw: 0, **axes)


def render(r, a):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, r * a])
    return f"r={r} a={a}", fig


def test_panel_renders_the_initial_position():
    panel = SliderPanel(render, {"r": [1, 2, 4], "a": [1, 8]}, initial={"a": 8})
    assert panel.values == {"r": 1, "a": 8}
    assert panel.text.value == "r=1 a=8"
    assert bytes(panel.image.value).startswith(PNG)


def test_moving_a_slider_looks_up_and_redraws():
    calls = []

    def counting(r, a):
        calls.append((r, a))
        return render(r, a)

    panel = SliderPanel(counting, {"r": [1, 2, 4], "a": [1, 8]})
    first = bytes(panel.image.value)
    panel.sliders["r"].value = 4
    assert panel.text.value == "r=4 a=1" and bytes(panel.image.value) != first
    panel.sliders["r"].value = 1  # back to a drawn position: cached, render not called again
    assert panel.text.value == "r=1 a=1" and bytes(panel.image.value) == first
    assert calls == [(1, 1), (4, 1)]
    assert plt.get_fignums() == []  # every drawn figure was closed


def test_text_only_views_hide_the_image():
    panel = SliderPanel(lambda r: f"<b>{r}</b>", {"r": [1, 2]})
    assert panel.text.value == "<b>1</b>" and panel.image.layout.display == "none"


@pytest.mark.parametrize("controls,initial", [({}, None), ({"r": []}, None), ({"r": [1, 2]}, {"r": 3}),
                                               ({"r": [1, 2]}, {"alpha": 1})])
def test_panel_rejects_bad_controls(controls, initial):
    with pytest.raises(ValueError):
        SliderPanel(lambda **kw: "", controls, initial=initial)


def test_figure_png_closes_the_figure():
    fig, _ = plots.figure(ncols=2, title="t")
    assert figure_png(fig).startswith(PNG) and plt.get_fignums() == []


def test_plot_helpers_draw_on_given_axes():
    s = lowrank.singular_values(torch.randn(20, 10))
    fig, axes = plots.figure(ncols=5)
    plots.plot_spectrum(axes[0], {"ΔW": s, "random": s}, r=3)
    plots.plot_energy(axes[1], {"W": s}, r=3)
    plots.show_matrix(axes[2], torch.randn(5, 5), "m")
    plots.plot_curves(axes[3], {"lora_lab": [3, 2, 1], "PEFT": [3, 2, 1]}, highlight="PEFT")
    sigma = plots.plot_histogram_vs_normal(axes[4], torch.randn(1000) * 0.5)
    assert 0.4 < sigma < 0.6 and all(ax.has_data() for ax in axes)
    plt.close(fig)


def test_format_table_aligns_numbers_right_and_text_left():
    table = plots.format_table(["name", "n"], [("a", 1000), ("bbb", 5)])
    assert table.splitlines() == ["name      n", "----  -----", "a     1,000", "bbb       5"]


# ----------------------------------------------------------------------------- lowrank

def test_low_rank_approx_is_eckart_young():
    w = torch.randn(30, 20, dtype=torch.float64)
    s = lowrank.singular_values(w)
    for r in (0, 1, 5, 20):
        approx = lowrank.low_rank_approx(w, r)
        assert approx.dtype == w.dtype and torch.linalg.matrix_rank(approx) == r
        assert torch.isclose((w - approx).norm(), s[r:].pow(2).sum().sqrt())
        assert torch.isclose(lowrank.relative_error(s)[r], (w - approx).norm() / w.norm())
    with pytest.raises(ValueError):
        lowrank.low_rank_approx(w, 21)


def test_energy_and_rank_for_energy():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert torch.allclose(lowrank.energy_captured(s), torch.tensor([0, 9 / 14, 13 / 14, 1.0], dtype=torch.float64))
    assert lowrank.rank_for_energy(s, 9 / 14) == 1 and lowrank.rank_for_energy(s, 0.65) == 2
    assert lowrank.rank_for_energy(s, 1.0) == 3
    with pytest.raises(ValueError):
        lowrank.rank_for_energy(s, 0)


def test_lora_params():
    assert lowrank.lora_params(4096, 4096, 8) == 65_536 and lowrank.lora_params(512, 192, 1) == 704


def test_an_on_off_control_is_a_toggle():
    import ipywidgets as widgets

    from lora_lab.widgets import SliderPanel

    panel = SliderPanel(lambda blocksize, double_quant: f"{blocksize} {double_quant}",
                        {"blocksize": [32, 64], "double_quant": [True, False]})
    assert isinstance(panel.sliders["double_quant"], widgets.ToggleButtons)
    assert isinstance(panel.sliders["blocksize"], widgets.SelectionSlider)
    panel.sliders["double_quant"].value = False
    assert panel.text.value == "32 False"
