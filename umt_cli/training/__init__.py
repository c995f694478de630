"""The training engine every stage shares: functions and small typed objects, no base class.

A stage file (`umt_cli/stages/*.py`) builds its models, data and optimizer and writes its per-step maths; the
engine does the rest:

| module | what it owns |
|---|---|
| `session` | the accelerator, the run directory and the resume point (`open_session`), then the assembled `Run` |
| `plan` | steps per epoch, total and warm-up steps, the learning-rate schedule (`Plan`) |
| `state` | what a checkpoint holds, as typed objects read and written in one place (`TrainState`, ...) |
| `checkpoints` | save, resume, cadence |
| `guards` | the non-finite loss guard, gradient norm and clipping |
| `report` | metrics (`metrics.jsonl`, TensorBoard), values reduced over processes, skipped-file reports |
| `loop` | `fit`: optimizer steps over epochs, logging, checkpoints, export of the weights and the run summary |

`docs/architecture.md` shows how a stage uses them.
"""
