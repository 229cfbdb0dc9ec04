"""fit(): learning, best weights, early stopping, exact resume after an interruption,
checkpoints that reload to the same predictions, and nothing written without out_dir."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from mmfuse.data import DatasetSplits, MultimodalDataset
from mmfuse.models import build_model, build_unimodal_model
from mmfuse.training import FitResult, TrainConfig, TrainConfigError, evaluate, fit, load_checkpoint


def quiet(**changes) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 32, "progress": False, "patience": 100}
    base.update(changes)
    return TrainConfig(**base)


def make_model(splits, fusion="gated", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(splits.specs, splits.num_classes, fusion, hidden_dim=16, **kw)


def test_fit_learns_and_returns_best_weights(small_splits, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = fit(make_model(small_splits), small_splits, quiet(epochs=6))
    assert isinstance(result, FitResult)
    assert list(tmp_path.iterdir()) == []  # no out_dir: no logs, no checkpoints
    assert result.epochs_run == 6 and result.checkpoint is None and result.train_time_s > 0
    assert not result.model.training
    test = evaluate(result.model, small_splits.test)
    assert test["accuracy"] > 0.8  # chance is 0.5
    # the returned weights are those of the epoch with the lowest validation loss
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == min(range(len(losses)), key=losses.__getitem__)
    val = small_splits.val
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(result.model(val.inputs, val.masks), val.labels)
    assert math.isclose(float(loss), losses[result.best_epoch], rel_tol=1e-5)
    assert set(result.val_metrics) == {"accuracy", "macro_f1", "auroc", "n"}


def test_early_stopping_stops_after_patience(small_splits) -> None:
    # validation labels flipped: the better the fit on train, the worse on val
    val = small_splits.val
    flipped = MultimodalDataset(val.name, val.inputs, 1 - val.labels, specs=val.specs,
                                num_classes=val.num_classes, masks=val.masks)
    splits = DatasetSplits(small_splits.name, small_splits.train, flipped, small_splits.test)
    result = fit(make_model(splits), splits, quiet(epochs=30, patience=2))
    losses = [h["val_loss"] for h in result.history]
    assert result.epochs_run < 30
    assert result.epochs_run == result.best_epoch + 1 + 2  # two epochs without improvement, then stop
    assert all(v >= losses[result.best_epoch] for v in losses[result.best_epoch :])


class Crash(L.Callback):
    def __init__(self, after_epoch: int) -> None:
        self.after_epoch = after_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.after_epoch:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("how", ["max_epochs", "crash"])
def test_resume_equals_uninterrupted(small_splits, tmp_path, how) -> None:
    # modality dropout and head dropout make the run depend on the RNG state as well
    cfg = quiet(epochs=5, modality_dropout=0.3)
    full = fit(make_model(small_splits, dropout=0.2), small_splits, cfg)

    out = tmp_path / "run"
    if how == "max_epochs":
        first = fit(make_model(small_splits, dropout=0.2), small_splits, cfg.replace(epochs=2), out)
        assert first.epochs_run == 2
    else:
        with pytest.raises(RuntimeError, match="simulated crash"):
            # the crash hits after epoch 2's checkpoint was written (ours runs first)
            fit(make_model(small_splits, dropout=0.2), small_splits, cfg, out, callbacks=[Crash(2)])
    assert (out / "last.safetensors").is_file()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]

    resumed = fit(make_model(small_splits, seed=99, dropout=0.2), small_splits, cfg, out, resume=True)
    assert resumed.epochs_run == 5
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_of_a_finished_run_trains_no_more(small_splits, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = quiet(epochs=2)
    first = fit(make_model(small_splits), small_splits, cfg, out)
    again = fit(make_model(small_splits, seed=5), small_splits, cfg, out, resume=True)
    assert again.epochs_run == 2
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])


def test_resume_without_a_checkpoint_starts_fresh(small_splits, tmp_path) -> None:
    result = fit(make_model(small_splits), small_splits, quiet(epochs=1), tmp_path / "new", resume=True)
    assert result.epochs_run == 1
    with pytest.raises(TrainConfigError, match="out_dir"):
        fit(make_model(small_splits), small_splits, quiet(epochs=1), resume=True)


@pytest.mark.parametrize("kind", ["fusion", "decision", "unimodal"])
def test_checkpoint_reload_reproduces_predictions(small_splits, tmp_path, kind) -> None:
    if kind == "unimodal":
        torch.manual_seed(0)
        model = build_unimodal_model(small_splits.specs, small_splits.num_classes, "x1", hidden_dim=16)
    elif kind == "decision":
        model = make_model(small_splits, "late", fusion_options={"level": "decision"})
    else:
        model = make_model(small_splits, "gated")
    result = fit(model, small_splits, quiet(epochs=2), tmp_path)
    assert result.checkpoint == tmp_path / "model.safetensors"

    def forbid(*args, **kwargs):
        raise AssertionError("checkpoints must not be read with torch.load (pickle)")

    original = torch.load
    torch.load = forbid
    try:
        loaded = load_checkpoint(result.checkpoint)
    finally:
        torch.load = original
    test = small_splits.test
    with torch.no_grad():
        assert torch.equal(loaded(test.inputs, test.masks), result.model(test.inputs, test.masks))
    assert evaluate(loaded, test) == evaluate(result.model, test)


def test_deterministic_switch_is_restored(small_splits) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    fit(make_model(small_splits), small_splits, quiet(epochs=1, deterministic=True))
    assert torch.are_deterministic_algorithms_enabled() == before


def test_same_seed_same_result(small_splits) -> None:
    a = fit(make_model(small_splits), small_splits, quiet(epochs=2, seed=3))
    b = fit(make_model(small_splits), small_splits, quiet(epochs=2, seed=3))
    c = fit(make_model(small_splits), small_splits, quiet(epochs=2, seed=4))
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"patience": -1}, "patience"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"max_time": 0}, "max_time"),
        ({"epochs": 2.5}, "epochs"),
    ],
)
def test_train_config_validation(changes, match) -> None:
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**changes)
    with pytest.raises(TrainConfigError, match="unknown TrainConfig field 'bogus'"):
        TrainConfig().replace(bogus=1)


def test_chunked_steps_give_the_same_updates_as_one_minibatch_per_step(small_splits, monkeypatch) -> None:
    from mmfuse.training import loaders

    cfg = quiet(epochs=3, modality_dropout=0.3, batch_size=48)  # 280 rows: a partial last minibatch
    chunked = fit(make_model(small_splits, dropout=0.2), small_splits, cfg)
    monkeypatch.setattr(loaders, "CHUNK_STEPS", 1)
    single = fit(make_model(small_splits, dropout=0.2), small_splits, cfg)
    assert [h["train_loss"] for h in chunked.history] == [h["train_loss"] for h in single.history]
    a, b = chunked.model.state_dict(), single.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_chunks_are_capped_by_their_size_in_bytes() -> None:
    from mmfuse.data import ModalitySpec
    from mmfuse.training.loaders import CHUNK_BYTES, CHUNK_STEPS, chunk_steps

    def dataset(shape):
        x = torch.zeros(4, *shape)
        return MultimodalDataset("d", {"x": x}, torch.tensor([0, 1, 0, 1]),
                                 specs={"x": ModalitySpec("vector", shape)}, num_classes=2)

    assert chunk_steps(dataset((32,)), 128) == CHUNK_STEPS
    row = 3 * 224 * 224 * 4  # a float image
    assert chunk_steps(dataset((3, 224, 224)), 128) == max(1, CHUNK_BYTES // (row * 128))
    assert chunk_steps(dataset((3, 224, 224)), 4096) == 1


def _fit_recording_plain(small_splits, monkeypatch, cfg, callbacks=()):
    """fit, and whether it stepped without Lightning's wrappers, and its global_step."""
    from mmfuse.training import module as lightning_module

    seen: dict = {}
    decide = lightning_module._plain_steps

    def spy(trainer, module):
        seen["plain"] = decide(trainer, module)
        seen["trainer"] = trainer
        return seen["plain"]

    monkeypatch.setattr(lightning_module, "_plain_steps", spy)
    result = fit(make_model(small_splits, dropout=0.2), small_splits, cfg, callbacks=callbacks)
    return result, seen["plain"], seen["trainer"].global_step


def test_plain_steps_give_lightnings_updates_and_step_count(small_splits, monkeypatch) -> None:
    """Where Lightning's backward / optimizer-step wrappers only call hooks nobody
    implements, fit calls torch directly: same updates, same global_step."""
    from mmfuse.training import module as lightning_module

    cfg = quiet(epochs=3, modality_dropout=0.3, batch_size=48)  # 280 rows: 6 minibatches an epoch
    plain, used, steps = _fit_recording_plain(small_splits, monkeypatch, cfg)
    assert used and steps == 3 * 6
    monkeypatch.setattr(lightning_module, "_plain_steps", lambda trainer, module: False)
    wrapped = fit(make_model(small_splits, dropout=0.2), small_splits, cfg)
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in wrapped.history]
    a, b = plain.model.state_dict(), wrapped.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_step_hooks_still_run_where_a_callback_implements_them(small_splits, monkeypatch) -> None:
    calls: list[str] = []

    class Hooks(L.Callback):
        def on_before_backward(self, trainer, pl_module, loss) -> None:
            calls.append("before_backward")

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            calls.append("before_step")

    cfg = quiet(epochs=1, batch_size=48)
    _, used, steps = _fit_recording_plain(small_splits, monkeypatch, cfg, callbacks=[Hooks()])
    assert not used and steps == 6
    assert calls == ["before_backward", "before_step"] * 6


def test_mixed_precision_keeps_lightnings_step(small_splits, monkeypatch) -> None:
    cfg = quiet(epochs=1, batch_size=48, precision="bf16-mixed")
    _, used, steps = _fit_recording_plain(small_splits, monkeypatch, cfg)
    assert not used and steps == 6


def test_external_callbacks_still_load_from_entry_points_read_once(small_splits, monkeypatch) -> None:
    """Callbacks registered through Lightning's entry point group still join every fit
    (a fresh one per Trainer) although the entry points are read once per process."""
    from lightning.pytorch.trainer.connectors import callback_connector

    from mmfuse.training import engine

    made: list[L.Callback] = []

    class Registered(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            self.started = True

    class Factory:
        name = "test"

        def load(self):
            return lambda: made.append(Registered()) or made[-1]

    original = callback_connector._load_external_callbacks
    monkeypatch.setattr(engine, "_entry_points", lambda group: (Factory(),) if "callbacks" in group else ())
    for _ in range(2):
        fit(make_model(small_splits), small_splits, quiet(epochs=1))
    assert len(made) == 2 and made[0] is not made[1] and all(cb.started for cb in made)
    assert callback_connector._load_external_callbacks is original  # restored after each Trainer
