"""The notifier actor: signed webhooks for CARS's public results (see `router`)."""
