-- Rolls back 20251109091141_AddAgentSessionsTable: drops AgentSessions (its
-- indexes and foreign key go with it).
-- LOSES every agent session row. Every other table is untouched.

DROP TABLE "AgentSessions";
