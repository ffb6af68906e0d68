//! The `logs` table: one COPY row per OTLP log record.
