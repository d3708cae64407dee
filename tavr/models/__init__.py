"""Networks: the TAVR video DiT, its layers, and the Wan2.1 video VAE wrapper."""
