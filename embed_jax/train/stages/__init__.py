"""The kinds of stage (embed_jax/train/config.py, StageConfig.kind), one module each, and what they share.

    text.py     kind='records'        the encoder and heads on one batch of teacher records per step
    cached.py   kind='cached_pooled'  the heads alone on pooled vectors computed once (train/cached_heads.py's step)
    vision.py   kind='images'         the vision tower on image–caption records (stage 4)
    batch.py    what text and vision share: a jitted step over one global batch, resumed with its data iterator
    student.py  a stage's student: built with the stage's heads, handed the previous stage's weights
    resume.py   a stage's checkpoints: refused when another run's or other shapes, resumed from the latest

Each supplies its steps to the one driver (embed_jax/train/driver.py); embed_jax/train/loop.py picks the module by kind.
"""
