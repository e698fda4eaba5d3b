"""Text without TensorFlow: the model's tokenizer (`tokenizer`), every prompt format (`prompts`) and problem sets
by name (`problems`). Training, sampling, scoring and the data layer all read text through here."""
