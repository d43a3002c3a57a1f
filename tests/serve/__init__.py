"""kerastrain serve: the OpenAI API through the real client, the chat page in a browser."""
