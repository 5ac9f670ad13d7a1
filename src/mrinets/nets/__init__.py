"""Network architectures (torch ``nn.Module``); they know nothing of files."""
