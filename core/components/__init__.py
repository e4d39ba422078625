"""Components shared by recipes: modules, losses and data pieces that own no training loop."""
