"""The loss plot's legends sit off the curves: below each panel, inside the picture."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.train.run_log import RunLogger  # noqa: E402


def test_legends_do_not_cover_the_axes_data_area(tmp_path):
    log = RunLogger("legend", {"epochs": 6}, logs_root=tmp_path / "logs", checkpoints_root=tmp_path / "ckpt")
    for fold in (0, 1):
        for epoch in range(0, 6):
            log.log_metrics({"fold": fold, "epoch": epoch, "train_loss": 3.0 / (epoch + 1),
                             "val_loss": 2.5 / (epoch + 1), "val_GF_loss": 1.0 + epoch, "val_DeepDXF_loss": 2.0,
                             "val_cross_loss": 0.5, "val_group_loss": 0.7, "w_GF": 0.5, "w_DeepDXF": 1.5})
    log.set_chance_levels({"val_loss": 4.0, "val_GF_loss": 2.2, "val_DeepDXF_loss": 3.0})
    fig = log.loss_figure()
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        figure_box = fig.bbox
        axes = [ax for ax in fig.axes if ax.get_legend() is not None]
        assert len(axes) == 3
        for ax in axes:
            legend_box = ax.get_legend().get_window_extent(renderer)
            for other in fig.axes:  # off its own data area and off its neighbours'
                assert not legend_box.overlaps(other.get_window_extent(renderer)), ax.get_title()
            assert legend_box.y1 < ax.get_window_extent(renderer).y0  # below its panel
            assert legend_box.x0 >= figure_box.x0 - 1 and legend_box.y0 >= figure_box.y0 - 1  # not cut off
    finally:
        plt.close(fig)
    out = log.plot_losses()
    assert out is not None and out.is_file()
