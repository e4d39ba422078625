"""Request and response bodies, shaped like the OpenAI fine-tuning API where it fits."""
