"""Shared plumbing for every service: settings, logging, Kafka, Postgres, migrations, health."""
