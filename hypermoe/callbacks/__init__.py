"""Lightning callbacks for what cuts across every LightningModule: progress lines, the non-finite loss guard,
routing statistics, expert load, per-batch reseeding and mid-epoch dataloader resumes.
Each is listed in ``conf/callbacks/default.yaml``; they read the net's MoE layers through
``pl_module.net.moe`` and ``pl_module.net.moe_names``."""
