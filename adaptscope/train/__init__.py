"""Training: the one GAN step shared by source pretraining and adaptation, the adaptation loop,
loading experiments, the local executor of many runs, and the realism classifier's trainer."""
