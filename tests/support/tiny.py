"""The overrides that make a training run tiny."""

# Small enough for 2 CPU cores: 32 px inputs, resnet18, a few batches per epoch.
TINY = [
    "data=synthetic",
    "data.synthetic.per_class=12",
    "data.synthetic.image_size=48",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "model.arch=resnet18",
    "model.pretrained=false",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]

# What every finished run's metrics.json holds.
METRIC_KEYS = {"val_loss", "val_acc", "test_loss", "test_acc", "test_rmse", "test_mae",
               "test_within1_acc", "test_per_class_acc",
               "temperature", "val_ece", "val_ece_calibrated", "test_ece", "test_ece_calibrated",
               "reconcile_settled", "reconcile_review"}
