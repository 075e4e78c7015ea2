"""The worker service: process supervision, consumer wiring, signals and the command line."""
