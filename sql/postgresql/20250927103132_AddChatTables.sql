-- Chat tables on PostgreSQL: ChatSessions and ChatMessages of EF Core migration
-- 20250927103132_InitialPostgreSQLMigration, as EF Core 9's Npgsql provider
-- creates them (ids uuid, Content character varying(4000)), their seven
-- indexes, and ChatMessages.SessionId -> ChatSessions.Id ON DELETE CASCADE.
-- Rollback (20250927103132_AddChatTables.rollback.sql) drops both tables:
-- every chat session and message is lost. The core tables, AgentSessions and
-- their rows stay.
-- depends: 20250927103131_OrchestraCore

CREATE TABLE "ChatSessions" (
    "Id" uuid NOT NULL,
    "UserId" character varying(128),
    "InstanceId" character varying(128) NOT NULL,
    "Title" character varying(200) NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "LastMessageAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_ChatSessions" PRIMARY KEY ("Id")
);

CREATE TABLE "ChatMessages" (
    "Id" uuid NOT NULL,
    "SessionId" uuid NOT NULL,
    "Author" character varying(255) NOT NULL,
    "Content" character varying(4000) NOT NULL,
    "MessageType" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "Metadata" character varying(2000),
    CONSTRAINT "PK_ChatMessages" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId" FOREIGN KEY ("SessionId") REFERENCES "ChatSessions" ("Id") ON DELETE CASCADE
);

CREATE INDEX "IX_ChatMessages_CreatedAt" ON "ChatMessages" ("CreatedAt");

CREATE INDEX "IX_ChatMessages_SessionId" ON "ChatMessages" ("SessionId");

CREATE INDEX "IX_ChatMessages_SessionId_CreatedAt" ON "ChatMessages" ("SessionId", "CreatedAt");

CREATE INDEX "IX_ChatSessions_CreatedAt" ON "ChatSessions" ("CreatedAt");

CREATE INDEX "IX_ChatSessions_LastMessageAt" ON "ChatSessions" ("LastMessageAt");

CREATE INDEX "IX_ChatSessions_UserId" ON "ChatSessions" ("UserId");

CREATE INDEX "IX_ChatSessions_UserId_InstanceId" ON "ChatSessions" ("UserId", "InstanceId");
