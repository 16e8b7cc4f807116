-- Rolls back 20250927103132_AddChatTables: drops ChatMessages, then
-- ChatSessions (their indexes and the foreign key go with them).
-- LOSES every chat session and message. The core tables and AgentSessions are
-- untouched.

DROP TABLE "ChatMessages";

DROP TABLE "ChatSessions";
