-- AgentSessions on PostgreSQL: EF Core migration
-- 20251109091141_AddAgentSessionsTable, as EF Core 9's Npgsql provider creates
-- it: one table, three indexes (SessionId unique), and
-- AgentSessions.AgentId -> Agents.Id ON DELETE CASCADE.
-- Rollback (20251109091141_AddAgentSessionsTable.rollback.sql) drops the
-- table: every agent session row is lost. Nothing else changes.
-- depends: 20250927103131_OrchestraCore

CREATE TABLE "AgentSessions" (
    "Id" character varying(128) NOT NULL,
    "AgentId" character varying(128) NOT NULL,
    "SessionId" character varying(128) NOT NULL,
    "ProcessId" integer,
    "WorkingDirectory" character varying(500) NOT NULL,
    "Status" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "LastResumedAt" timestamp with time zone,
    "ClosedAt" timestamp with time zone,
    "TotalCostUsd" double precision NOT NULL,
    "TotalDurationMs" bigint NOT NULL,
    "MessageCount" integer NOT NULL,
    CONSTRAINT "PK_AgentSessions" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_AgentSessions_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents" ("Id") ON DELETE CASCADE
);

CREATE INDEX "IX_AgentSessions_AgentId" ON "AgentSessions" ("AgentId");

CREATE INDEX "IX_AgentSessions_AgentId_Status" ON "AgentSessions" ("AgentId", "Status");

CREATE UNIQUE INDEX "IX_AgentSessions_SessionId" ON "AgentSessions" ("SessionId");
