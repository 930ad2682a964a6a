"""Training: config in, checkpoints, metrics and samples out.

  optimizer       AdamW with warmup + cosine decay and clipping (+ accumulation)
  state           TrainState, its shardings, initialisation, `setup` of a run
  ema             the exponential moving average of the parameters (train.ema_rate)
  steps           loss_fn / train_step / eval_step (jitted under the mesh)
  evaluation      validation bits per byte
  samples         the periodic samples of a training run
  mfu             peak FLOP/s per device and model FLOPs utilisation
  metric_logging  TensorBoard events and metrics.jsonl
  checkpointing   orbax: train state and data iterator together; config.json
  preemption      SIGTERM / SIGINT: finish the step, checkpoint, stop
  restore         trained runs loaded for inference (models, entropy models)
  export          the inference export: one self-contained, versioned orbax directory
  loop            train_and_evaluate
"""
