"""Jobs: the runners (in process or on Redis), their JSON payloads and what each kind of job does."""
