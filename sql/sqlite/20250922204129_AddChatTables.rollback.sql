-- Rolls back 20250922204129_AddChatTables: drops ChatMessages, then
-- ChatSessions (their indexes go with them).
-- LOSES every chat session and message. Orchestra core tables are untouched.

DROP TABLE "ChatMessages";

DROP TABLE "ChatSessions";
