"""Data layer, the only one importing TensorFlow/seqio: MATH and PRM800K readers and TFDS builders, the synthetic
domain, seqio tasks registered per tokenizer (`tasks`), features (`features`), the tokenizer as a seqio vocabulary
(`vocabularies`) and the batch source of training (`seqio_source`). `synthetic`, `math_dataset` (its readers) and
`prm800k` (its readers) import no TensorFlow themselves."""
