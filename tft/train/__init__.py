"""Training: fine-tune a task's model with the Hugging Face Trainer."""
