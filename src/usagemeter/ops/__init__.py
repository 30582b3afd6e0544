"""Operations, apart from both flows: migrations, the embedded PostgreSQL, type generation."""
