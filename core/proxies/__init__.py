"""Source proxies: labelled data of the body's pretraining modality, the source side of every method.

`sources` reads the raw samples (torch-free); `bank` sees them through the body's frozen pretrained
input embedding, as token sequences drawn batch by batch (patch replacement, MoNA) or as mean-pooled
features cached on disk (ORCA's alignment).
"""
