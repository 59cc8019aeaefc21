-- 0002 down: drop the chat sessions and their messages.
DROP TABLE chat_messages;
DROP INDEX chat_sessions_last_used;
DROP INDEX chat_sessions_owner;
DROP TABLE chat_sessions;
