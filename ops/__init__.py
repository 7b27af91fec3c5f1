"""Operations: local service scripts (Kafka, Postgres, RabbitMQ), benchmarks, monitoring config."""
