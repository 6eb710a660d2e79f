"""The fine-tune's progress in a notebook, labelled in the kit's language.

transformers shows a training run in Jupyter with `NotebookProgressCallback`: a progress bar, "Epoch 2/3", and a
table of the training loss every `logging_steps`, all in English. `NotebookProgress` is the same display with its
labels and numbers in the kit's language (lora_lab.i18n); `use_notebook_progress` puts it in a trainer's place of
transformers' own when the language is not English (English keeps transformers' display as it is).
"""

from __future__ import annotations

from transformers.utils.notebook import NotebookProgressCallback

from .i18n import _, format_number, get_language

__all__ = ["NotebookProgress", "use_notebook_progress"]


class NotebookProgress(NotebookProgressCallback):
    """transformers' notebook progress bar and loss table, with the kit's words and numbers (training, no evaluation)."""

    def _columns(self) -> tuple[str, str]:
        return _("step"), _("training loss")

    def _epoch(self, state, epoch) -> str:
        return _("epoch {epoch}/{epochs}").format(epoch=epoch, epochs=state.num_train_epochs)

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.training_tracker.inner_table = [list(self._columns())]

    def on_step_end(self, args, state, control, **kwargs):
        epoch = int(state.epoch) if int(state.epoch) == state.epoch else round(state.epoch, 2)
        self.training_tracker.update(state.global_step + 1, comment=self._epoch(state, epoch),
                                     force_update=self._force_next_update)
        self._force_next_update = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.training_tracker is not None:
            step, loss = self._columns()
            self.training_tracker.write_line({step: state.global_step, loss: format_number(logs["loss"], ".6f")})

    def on_train_end(self, args, state, control, **kwargs):
        self.training_tracker.update(state.global_step, comment=self._epoch(state, int(state.epoch)), force_update=True)
        self.training_tracker = None


def use_notebook_progress(trainer) -> None:
    """In a language other than English, show `trainer`'s notebook progress with NotebookProgress.

    Nothing changes where transformers shows no notebook progress (a terminal, progress bars off), in English, or
    when the trainer evaluates during training (a table this class does not label).
    """
    callbacks = trainer.callback_handler.callbacks
    if get_language() == "en" or trainer.args.eval_strategy != "no":
        return
    if any(type(cb) is NotebookProgressCallback for cb in callbacks):
        trainer.remove_callback(NotebookProgressCallback)
        trainer.add_callback(NotebookProgress())
