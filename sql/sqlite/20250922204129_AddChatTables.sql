-- Chat tables: ChatSessions and ChatMessages (EF Core migration
-- 20250922204129_AddChatTables, verbatim as EF Core 9 created them), their
-- seven indexes, and ChatMessages.SessionId -> ChatSessions.Id ON DELETE CASCADE.
-- Rollback (20250922204129_AddChatTables.rollback.sql) drops both tables:
-- every chat session and message is lost. The core tables and their rows stay.
-- depends: 20250922204128_OrchestraCore

CREATE TABLE "ChatSessions" (
    "Id" TEXT NOT NULL CONSTRAINT "PK_ChatSessions" PRIMARY KEY,
    "UserId" TEXT NULL,
    "InstanceId" TEXT NOT NULL,
    "Title" TEXT NOT NULL,
    "CreatedAt" TEXT NOT NULL,
    "LastMessageAt" TEXT NOT NULL
);

CREATE TABLE "ChatMessages" (
    "Id" TEXT NOT NULL CONSTRAINT "PK_ChatMessages" PRIMARY KEY,
    "SessionId" TEXT NOT NULL,
    "Author" TEXT NOT NULL,
    "Content" TEXT NOT NULL,
    "MessageType" INTEGER NOT NULL,
    "CreatedAt" TEXT NOT NULL,
    "Metadata" TEXT NULL,
    CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId" FOREIGN KEY ("SessionId") REFERENCES "ChatSessions" ("Id") ON DELETE CASCADE
);

CREATE INDEX "IX_ChatMessages_CreatedAt" ON "ChatMessages" ("CreatedAt");

CREATE INDEX "IX_ChatMessages_SessionId" ON "ChatMessages" ("SessionId");

CREATE INDEX "IX_ChatMessages_SessionId_CreatedAt" ON "ChatMessages" ("SessionId", "CreatedAt");

CREATE INDEX "IX_ChatSessions_CreatedAt" ON "ChatSessions" ("CreatedAt");

CREATE INDEX "IX_ChatSessions_LastMessageAt" ON "ChatSessions" ("LastMessageAt");

CREATE INDEX "IX_ChatSessions_UserId" ON "ChatSessions" ("UserId");

CREATE INDEX "IX_ChatSessions_UserId_InstanceId" ON "ChatSessions" ("UserId", "InstanceId");
