"""Storage: the SQLite catalog (the truth), the index folder that holds it, the vectors, and the
search back ends that adapt one contract (FAISS, Qdrant, Qdrant Edge)."""
