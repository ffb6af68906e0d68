//! The metric tables: one COPY row per OTLP data point, in the table of its point type.
