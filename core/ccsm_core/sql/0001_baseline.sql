-- Baseline (version 1): ../shared/spec/schema.sql, the reconstructed production schema, without its DROP
-- statements. An existing database that already has these tables is adopted at this version without
-- running this file (see ccsm_core/migrations.py); an empty database gets it executed.

-- ---------------------------------------------------------------------------
-- CCSM (yburdakova/ccsmanagement) - reconstructed MySQL / MariaDB schema
-- ---------------------------------------------------------------------------
-- The upstream project ships no DDL. This file is a reconstruction derived from:
--   * every SQL statement in backend/routes/*.js and backend/ws/desktop-ws.js
--   * the desktop client's direct-MySQL module desktop/api/db.js
--   * the desktop SQLite mirror tables in desktop/api/db-local.js
--   * an old committed SQLite cache (desktop/db/local.db @45fde73) for
--     reference values (roles, project type ids)
--   * hard-coded ids in the code (activity ids, task ids, data_def_id=1, ...)
--
-- Conventions chosen here (not dictated by the code):
--   * InnoDB, utf8mb4 / utf8mb4_unicode_ci, INT UNSIGNED surrogate keys.
--   * Flags are TINYINT(1) (mysql2 returns them as 0/1 numbers, which is what
--     the backend and the frontend compare against).
--   * Foreign keys are declared where the code treats a column as a reference
--     to one table. Columns that the code joins polymorphically (item ids that
--     may point at items / cfs_items / im_items) get an index but no FK.
--   * Lines starting with "-- ?" mark guesses that the code does not settle.
--
-- Load order: this file drops and recreates every table; load seed.sql next.
-- ---------------------------------------------------------------------------

SET NAMES utf8mb4;
SET FOREIGN_KEY_CHECKS = 0;


SET FOREIGN_KEY_CHECKS = 1;

-- ===========================================================================
-- Reference tables
-- ===========================================================================

-- System (application) roles. auth/auth-config.js hard-codes
-- 1 = admin, 2 = employee, 3 = customer. Read by GET /api/users/roles.
CREATE TABLE ref_system_roles (
  id    INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name  VARCHAR(50)  NOT NULL,
  label VARCHAR(100) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_ref_system_roles_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Project types. projects.type_code joins on `code`
-- (LEFT JOIN ref_project_types pt ON pt.code = p.type_code) and
-- /api/lookups/item-categories resolves ?projectTypeCode= to the numeric id.
-- The desktop still uses numeric type ids (1 = CFS -> cfs_items,
-- 2 = IM -> im_items).
CREATE TABLE ref_project_types (
  id    INT UNSIGNED NOT NULL AUTO_INCREMENT,
  code  VARCHAR(16)  NOT NULL,
  label VARCHAR(100) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_ref_project_types_code (code)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Item types (what a project produces / tracks: box, book, map, ...).
-- POST /api/items/jira-sync writes item_type_id = 4 unconditionally, so a row
-- with id 4 must exist (the seed uses it for "Jira issue").
CREATE TABLE ref_item_types (
  id   INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Unit types. /api/lookups/project-form first tries a table called `units`
-- (id, name | label) and falls back to ref_unit_types when `units` is missing
-- or empty. items.unit_type_id and projects.unit_id point here.
-- ? `units` is treated as an older alternative name and is not created.
CREATE TABLE ref_unit_types (
  id   INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Project statuses. POST/PUT /api/projects default project_status_id to 1,
-- and the desktop only syncs project_users of projects with status 1
-- (so id 1 means "active").
CREATE TABLE ref_project_status (
  id    INT UNSIGNED NOT NULL AUTO_INCREMENT,
  label VARCHAR(100) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Roles a user can have inside a project (manager, team lead, ...).
-- Desktop mirror: ref_project_roles(id, name, label).
CREATE TABLE ref_project_roles (
  id    INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name  VARCHAR(50)  NOT NULL,
  label VARCHAR(100) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Task categories (shown as "task_type" on the production sheet).
CREATE TABLE ref_task_category (
  id   INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Time-tracking activity kinds. Ids are hard-coded across the clients:
-- 1 lunch, 2 project task (production), 3 break, 4 unallocated / other
-- (desktop default for clock-in), 5 meeting, 6 training, 7 clean up,
-- 8 administration, 9 set-up/shut-down, 10 travelling, 11 technical delay.
-- The production sheet shows `description` and compares `name` with
-- 'unallocated'.
CREATE TABLE activities (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name        VARCHAR(50)  NOT NULL,
  description VARCHAR(255) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_activities_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ===========================================================================
-- People and customers
-- ===========================================================================

-- Application users (web login by login/password, desktop login by authcode).
-- `password` holds a bcrypt hash ($2a/$2b/$2y, 60 chars); legacy rows may
-- still hold plain text, which POST /api/login accepts once and then
-- rewrites as bcrypt. POST/PUT /api/users reject duplicates of
-- login / email / authcode, hence the unique keys.
-- ? email nullable: the API always sends one, but legacy rows may lack it.
CREATE TABLE users (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
  first_name  VARCHAR(100) NOT NULL,
  last_name   VARCHAR(100) NOT NULL,
  email       VARCHAR(255) NULL,
  login       VARCHAR(100) NOT NULL,
  password    VARCHAR(255) NOT NULL,
  authcode    VARCHAR(32)  NULL,
  system_role INT UNSIGNED NOT NULL DEFAULT 2,
  is_active   TINYINT(1)   NOT NULL DEFAULT 1,
  is_ccs      TINYINT(1)   NOT NULL DEFAULT 0,   -- ? "is CCS staff" (vs customer-side user)
  PRIMARY KEY (id),
  UNIQUE KEY uq_users_login (login),
  UNIQUE KEY uq_users_email (email),
  UNIQUE KEY uq_users_authcode (authcode),
  KEY idx_users_name (first_name, last_name),     -- Jira assignee lookup by name
  CONSTRAINT fk_users_system_role FOREIGN KEY (system_role)
    REFERENCES ref_system_roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Customers (counties / courts). POST/PUT /api/customers require every
-- column, but the frontend types them as nullable, so only name is NOT NULL.
CREATE TABLE customers (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name          VARCHAR(255) NOT NULL,
  state         VARCHAR(64)  NULL,
  county        VARCHAR(128) NULL,
  contact_name  VARCHAR(255) NULL,
  contact_email VARCHAR(255) NULL,
  contact_phone VARCHAR(64)  NULL,
  PRIMARY KEY (id),
  KEY idx_customers_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ===========================================================================
-- Projects and their configuration
-- ===========================================================================

-- Projects. The backend reads/writes: name, type_code, item_id, unit_id,
-- project_status_id, customer_id, is_jira, created_at.
-- The desktop pulls `SELECT * FROM projects` and still reads the older
-- columns code, type_id and is_active (its SQLite mirror has them, and the
-- renderer filters projects by type_id). They are kept as nullable legacy
-- columns. The backend never writes them, so projects created through the
-- API have type_id = NULL.
CREATE TABLE projects (
  id                INT UNSIGNED NOT NULL AUTO_INCREMENT,
  code              VARCHAR(32)  NULL,               -- legacy (desktop mirror)
  name              VARCHAR(255) NOT NULL,
  type_id           INT UNSIGNED NULL,               -- legacy numeric project type (desktop)
  type_code         VARCHAR(16)  NULL,               -- current project type (web/backend)
  item_id           INT UNSIGNED NULL,               -- item type produced by the project
  unit_id           INT UNSIGNED NULL,               -- unit type
  project_status_id INT UNSIGNED NOT NULL DEFAULT 1,
  customer_id       INT UNSIGNED NULL,
  is_jira           TINYINT(1)   NOT NULL DEFAULT 0,
  is_active         TINYINT(1)   NULL DEFAULT 1,     -- legacy (desktop mirror)
  created_at        DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY idx_projects_created_at (created_at),
  KEY idx_projects_status (project_status_id),
  CONSTRAINT fk_projects_type_code FOREIGN KEY (type_code)
    REFERENCES ref_project_types (code) ON UPDATE CASCADE,
  CONSTRAINT fk_projects_type_id FOREIGN KEY (type_id)
    REFERENCES ref_project_types (id),
  CONSTRAINT fk_projects_item_type FOREIGN KEY (item_id)
    REFERENCES ref_item_types (id),
  CONSTRAINT fk_projects_unit_type FOREIGN KEY (unit_id)
    REFERENCES ref_unit_types (id),
  CONSTRAINT fk_projects_status FOREIGN KEY (project_status_id)
    REFERENCES ref_project_status (id),
  -- ? SET NULL chosen so DELETE /api/customers/:id works for customers that
  --   still have projects (the route has no special handling for FK errors).
  CONSTRAINT fk_projects_customer FOREIGN KEY (customer_id)
    REFERENCES customers (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Team membership: a user with a project role inside a project.
-- The backend supports both AUTO_INCREMENT and manually numbered ids
-- (SHOW COLUMNS ... LIKE 'id' + MAX(id)+1); AUTO_INCREMENT is used here.
CREATE TABLE project_users (
  id              INT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id      INT UNSIGNED NOT NULL,
  user_id         INT UNSIGNED NOT NULL,
  project_role_id INT UNSIGNED NOT NULL,
  PRIMARY KEY (id),
  KEY idx_project_users_project (project_id),
  KEY idx_project_users_user_project (user_id, project_id),
  CONSTRAINT fk_project_users_project FOREIGN KEY (project_id)
    REFERENCES projects (id) ON DELETE CASCADE,
  CONSTRAINT fk_project_users_user FOREIGN KEY (user_id)
    REFERENCES users (id),
  CONSTRAINT fk_project_users_role FOREIGN KEY (project_role_id)
    REFERENCES ref_project_roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Task catalogue. The backend only inserts (description, category_id); the
-- desktop mirror additionally carries name, default_role_id,
-- in_progress_status_id and completed_status_id (pulled with SELECT *).
-- Hard-coded ids in the backend: 1, 3, 6, 34, 36, 38 are "pages" production
-- tasks (metrics); 27 is the task used for Jira assignments.
CREATE TABLE tasks (
  id                    INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name                  VARCHAR(100) NULL,
  description           VARCHAR(255) NOT NULL,
  category_id           INT UNSIGNED NULL,
  default_role_id       INT UNSIGNED NULL,
  in_progress_status_id INT UNSIGNED NULL,   -- ? legacy item-status hooks, no FK
  completed_status_id   INT UNSIGNED NULL,   -- ? legacy item-status hooks, no FK
  PRIMARY KEY (id),
  KEY idx_tasks_category (category_id),
  CONSTRAINT fk_tasks_category FOREIGN KEY (category_id)
    REFERENCES ref_task_category (id),
  CONSTRAINT fk_tasks_default_role FOREIGN KEY (default_role_id)
    REFERENCES ref_project_roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Which project roles may perform which task in a project.
-- ? The desktop mirror also has is_default, but the backend and db.js select
--   "0 AS is_default" instead of reading it, so the server table is assumed
--   not to have it.
CREATE TABLE project_task_roles (
  id         INT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id INT UNSIGNED NOT NULL,
  task_id    INT UNSIGNED NOT NULL,
  role_id    INT UNSIGNED NOT NULL,
  PRIMARY KEY (id),
  KEY idx_ptr_project_role (project_id, role_id),
  KEY idx_ptr_task (task_id),
  CONSTRAINT fk_ptr_project FOREIGN KEY (project_id)
    REFERENCES projects (id) ON DELETE CASCADE,
  CONSTRAINT fk_ptr_task FOREIGN KEY (task_id)
    REFERENCES tasks (id),
  CONSTRAINT fk_ptr_role FOREIGN KEY (role_id)
    REFERENCES ref_project_roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Tasks attached to a project (ordering / prerequisites).
-- The backend inserts with only_after_number = NULL, is_mandatory = 1,
-- override_role_id = NULL.
-- ? (project_id, task_id) is not declared UNIQUE: the code looks it up with
--   LIMIT 1 and never relies on a duplicate-key error.
CREATE TABLE project_tasks (
  id                INT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id        INT UNSIGNED NOT NULL,
  task_id           INT UNSIGNED NOT NULL,
  order_number      INT          NULL,
  only_after_number INT          NULL,
  is_mandatory      TINYINT(1)   NOT NULL DEFAULT 1,
  override_role_id  INT UNSIGNED NULL,
  PRIMARY KEY (id),
  KEY idx_project_tasks_project_task (project_id, task_id),
  KEY idx_project_tasks_task (task_id),
  CONSTRAINT fk_project_tasks_project FOREIGN KEY (project_id)
    REFERENCES projects (id) ON DELETE CASCADE,
  CONSTRAINT fk_project_tasks_task FOREIGN KEY (task_id)
    REFERENCES tasks (id),
  CONSTRAINT fk_project_tasks_override_role FOREIGN KEY (override_role_id)
    REFERENCES ref_project_roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Definitions of extra data captured for a task (e.g. pages count).
-- value_type is one of: int|integer, decimal, varchar, text, bool|boolean,
-- date, datetime, customer_id, json (selects the value_* column).
-- POST /api/lookups/task-data-definitions handles ER_DUP_ENTRY by looking
-- the row up by `key` OR label, so both are unique.
-- The backend reads data_def_id = 1 as "pages" (value_int).
CREATE TABLE task_data_definitions (
  id         INT UNSIGNED NOT NULL AUTO_INCREMENT,
  `key`      VARCHAR(100) NOT NULL,
  label      VARCHAR(255) NOT NULL,
  value_type VARCHAR(20)  NOT NULL DEFAULT 'varchar',
  PRIMARY KEY (id),
  UNIQUE KEY uq_tdd_key (`key`),
  UNIQUE KEY uq_tdd_label (label)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Per-project task data: which definitions apply to a project task, an
-- optional preset value (one typed column used per row), and whether the
-- operator must fill it in (is_required; the code tolerates its absence).
CREATE TABLE project_task_data (
  id                INT UNSIGNED    NOT NULL AUTO_INCREMENT,
  project_task_id   INT UNSIGNED    NOT NULL,
  data_def_id       INT UNSIGNED    NOT NULL,
  is_required       TINYINT(1)      NOT NULL DEFAULT 0,
  value_int         BIGINT          NULL,
  value_decimal     DECIMAL(18,4)   NULL,
  value_varchar     VARCHAR(255)    NULL,
  value_text        TEXT            NULL,
  value_bool        TINYINT(1)      NULL,
  value_date        DATE            NULL,
  value_datetime    DATETIME        NULL,
  value_customer_id INT UNSIGNED    NULL,   -- ? customer reference; no FK (value column)
  value_json        LONGTEXT        NULL,   -- ? JSON text; MariaDB JSON is LONGTEXT anyway
  created_at        DATETIME        NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at        DATETIME        NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY idx_ptd_project_task_def (project_task_id, data_def_id),
  KEY idx_ptd_def (data_def_id),
  CONSTRAINT fk_ptd_project_task FOREIGN KEY (project_task_id)
    REFERENCES project_tasks (id),
  CONSTRAINT fk_ptd_def FOREIGN KEY (data_def_id)
    REFERENCES task_data_definitions (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ===========================================================================
-- Items (physical / logical units of work) and item status tracking
-- ===========================================================================

-- Item categories; project_specific_id = NULL means "valid for every project
-- type", otherwise a ref_project_types.id (filter in /api/lookups/item-categories).
CREATE TABLE ref_item_category (
  id                  INT UNSIGNED NOT NULL AUTO_INCREMENT,
  label               VARCHAR(100) NOT NULL,
  project_specific_id INT UNSIGNED NULL,
  PRIMARY KEY (id),
  KEY idx_ref_item_category_type (project_specific_id),
  CONSTRAINT fk_ref_item_category_type FOREIGN KEY (project_specific_id)
    REFERENCES ref_project_types (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Item statuses are defined per project (project form "item tracking" and
-- Jira sync insert (label, project_id)).
-- ? project_id nullable to allow global statuses; the backend always sets it.
-- ? The desktop mirror also has `name`, but the backend selects
--   "label AS name" (db.js falls back to that on ER_BAD_FIELD_ERROR), so the
--   server table is assumed to have only `label`.
CREATE TABLE ref_item_status (
  id         INT UNSIGNED NOT NULL AUTO_INCREMENT,
  label      VARCHAR(100) NOT NULL,
  project_id INT UNSIGNED NULL,
  PRIMARY KEY (id),
  KEY idx_ref_item_status_project_label (project_id, label),
  CONSTRAINT fk_ref_item_status_project FOREIGN KEY (project_id)
    REFERENCES projects (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Rule: when `task_id` starts (apply_after_finish = 0) or finishes
-- (apply_after_finish = 1) on an item, the item moves to `item_status_id`.
CREATE TABLE itemstatus_task (
  id                 INT UNSIGNED NOT NULL AUTO_INCREMENT,
  item_status_id     INT UNSIGNED NOT NULL,
  task_id            INT UNSIGNED NOT NULL,
  apply_after_finish TINYINT(1)   NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  KEY idx_itemstatus_task_status (item_status_id),
  KEY idx_itemstatus_task_task (task_id),
  CONSTRAINT fk_itemstatus_task_status FOREIGN KEY (item_status_id)
    REFERENCES ref_item_status (id),
  CONSTRAINT fk_itemstatus_task_task FOREIGN KEY (task_id)
    REFERENCES tasks (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Items registered in a project (boxes, books, Jira issues, ...).
-- POST /api/items inserts code = '' and then rewrites it as
-- "<category>-<projectId>.<itemId>-<projectSeq>-<categorySeq>"; Jira sync
-- uses code = issue key and matches existing items by (project_id, code).
-- status_id NULL means "Registered".
CREATE TABLE items (
  id                 INT UNSIGNED NOT NULL AUTO_INCREMENT,
  code               VARCHAR(100) NOT NULL DEFAULT '',
  label              VARCHAR(255) NULL,
  project_id         INT UNSIGNED NOT NULL,
  item_type_id       INT UNSIGNED NULL,
  item_category_id   INT UNSIGNED NULL,
  unit_type_id       INT UNSIGNED NULL,
  status_id          INT UNSIGNED NULL,
  created_by_user_id INT UNSIGNED NULL,
  created_at         DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at         DATETIME     NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY idx_items_project_code (project_id, code),
  KEY idx_items_project_category (project_id, item_category_id),
  KEY idx_items_status (status_id),
  CONSTRAINT fk_items_project FOREIGN KEY (project_id)
    REFERENCES projects (id),
  CONSTRAINT fk_items_type FOREIGN KEY (item_type_id)
    REFERENCES ref_item_types (id),
  CONSTRAINT fk_items_category FOREIGN KEY (item_category_id)
    REFERENCES ref_item_category (id),
  CONSTRAINT fk_items_unit_type FOREIGN KEY (unit_type_id)
    REFERENCES ref_unit_types (id),
  CONSTRAINT fk_items_status FOREIGN KEY (status_id)
    REFERENCES ref_item_status (id),
  CONSTRAINT fk_items_created_by FOREIGN KEY (created_by_user_id)
    REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Legacy per-project-type item tables (type 1 = CFS, type 2 = IM).
-- The backend treats them as optional: bootstrap returns [] when missing,
-- GET /api/time-tracking only joins them when information_schema lists them,
-- /api/desktop/project-items falls back to them when a project has no
-- `items`. The desktop SQLite mirror still creates both.
CREATE TABLE cfs_items (
  id             INT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id     INT UNSIGNED NOT NULL,
  label          VARCHAR(255) NOT NULL,
  task_status_id INT UNSIGNED NULL,       -- ? status id (ref_item_status), no FK
  PRIMARY KEY (id),
  KEY idx_cfs_items_project (project_id),
  CONSTRAINT fk_cfs_items_project FOREIGN KEY (project_id)
    REFERENCES projects (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE im_items (
  id             INT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id     INT UNSIGNED NOT NULL,
  label          VARCHAR(255) NOT NULL,
  task_status_id INT UNSIGNED NULL,       -- ? status id (ref_item_status), no FK
  PRIMARY KEY (id),
  KEY idx_im_items_project (project_id),
  CONSTRAINT fk_im_items_project FOREIGN KEY (project_id)
    REFERENCES projects (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ===========================================================================
-- Time tracking
-- ===========================================================================

-- One row per activity interval of a user. `uuid` is generated by the
-- client (desktop) or the backend and must be unique: the desktop routes turn
-- ER_DUP_ENTRY on insert into {duplicate: true}.
-- duration is in minutes. The desktop caps it at 255 when completing an
-- activity, which hints that production may use TINYINT UNSIGNED; the web
-- production sheet can store up to 1439 (whole-day entries), so
-- SMALLINT UNSIGNED is used here.
-- is_finished: NULL/0 = task interrupted (listed as unfinished when
-- activity_id = 2 and is_finished = 0), 1 = done.
-- item_id has no FK: it may reference items, cfs_items or im_items.
CREATE TABLE users_time_tracking (
  id          INT UNSIGNED      NOT NULL AUTO_INCREMENT,
  uuid        CHAR(36)          NOT NULL,
  user_id     INT UNSIGNED      NOT NULL,
  date        DATE              NOT NULL,
  project_id  INT UNSIGNED      NULL,
  activity_id INT UNSIGNED      NOT NULL,
  task_id     INT UNSIGNED      NULL,
  item_id     INT UNSIGNED      NULL,
  start_time  DATETIME          NOT NULL,
  end_time    DATETIME          NULL,
  duration    SMALLINT UNSIGNED NULL,
  is_finished TINYINT(1)        NULL,
  note        TEXT              NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_utt_uuid (uuid),
  KEY idx_utt_user_date_start (user_id, date, start_time),
  KEY idx_utt_user_activity_finished (user_id, activity_id, is_finished),
  KEY idx_utt_project (project_id),
  KEY idx_utt_task (task_id),
  KEY idx_utt_item (item_id),
  CONSTRAINT fk_utt_user FOREIGN KEY (user_id)
    REFERENCES users (id),
  CONSTRAINT fk_utt_activity FOREIGN KEY (activity_id)
    REFERENCES activities (id),
  CONSTRAINT fk_utt_project FOREIGN KEY (project_id)
    REFERENCES projects (id),
  CONSTRAINT fk_utt_task FOREIGN KEY (task_id)
    REFERENCES tasks (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Values captured when a tracked task is stopped (e.g. pages scanned).
-- Keyed by the tracking row's uuid. The desktop upserts with
-- INSERT ... ON DUPLICATE KEY UPDATE, so (tracking_uuid, data_def_id) is
-- unique. db.js documents that this table has no value_customer_id: customer
-- ids go to value_int, which is BIGINT.
-- The backend deletes these rows before deleting the tracking row, so a
-- plain (RESTRICT) FK is used.
CREATE TABLE users_time_tracking_data (
  id             INT UNSIGNED  NOT NULL AUTO_INCREMENT,
  tracking_uuid  CHAR(36)      NOT NULL,
  data_def_id    INT UNSIGNED  NOT NULL,
  value_int      BIGINT        NULL,
  value_decimal  DECIMAL(18,4) NULL,
  value_varchar  VARCHAR(255)  NULL,
  value_text     TEXT          NULL,
  value_bool     TINYINT(1)    NULL,
  value_date     DATE          NULL,
  value_datetime DATETIME      NULL,
  value_json     LONGTEXT      NULL,
  created_at     DATETIME      NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at     DATETIME      NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  UNIQUE KEY uq_uttd_uuid_def (tracking_uuid, data_def_id),
  KEY idx_uttd_def (data_def_id),
  CONSTRAINT fk_uttd_tracking FOREIGN KEY (tracking_uuid)
    REFERENCES users_time_tracking (uuid),
  CONSTRAINT fk_uttd_def FOREIGN KEY (data_def_id)
    REFERENCES task_data_definitions (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Production notes left when a project task (activity 2) is completed with a
-- note (max 500 chars, trimmed by the backend). Non-task activities store
-- their note on users_time_tracking.note instead.
-- item_id / unit_id have no FK (item may live in items, cfs_items or im_items;
-- the backend always writes unit_id = NULL).
CREATE TABLE prod_notes (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id  INT UNSIGNED NULL,
  item_id     INT UNSIGNED NULL,
  unit_id     INT UNSIGNED NULL,
  user_id     INT UNSIGNED NOT NULL,
  task_id     INT UNSIGNED NULL,
  activity_id INT UNSIGNED NULL,
  note        VARCHAR(500) NOT NULL,
  created_at  DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  KEY idx_prod_notes_project_item (project_id, item_id),
  KEY idx_prod_notes_user (user_id),
  CONSTRAINT fk_prod_notes_project FOREIGN KEY (project_id)
    REFERENCES projects (id),
  CONSTRAINT fk_prod_notes_user FOREIGN KEY (user_id)
    REFERENCES users (id),
  CONSTRAINT fk_prod_notes_task FOREIGN KEY (task_id)
    REFERENCES tasks (id),
  CONSTRAINT fk_prod_notes_activity FOREIGN KEY (activity_id)
    REFERENCES activities (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Work assignments pushed to a user (the desktop lists the ones not yet
-- accepted). The table name keeps the upstream spelling "assigments".
-- Jira sync creates rows with task_id = 27, role_id = NULL, is_accepted = 0.
-- ? is_accepted nullable: the desktop query treats NULL as "not accepted".
CREATE TABLE assigments (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id     INT UNSIGNED NOT NULL,
  project_id  INT UNSIGNED NOT NULL,
  item_id     INT UNSIGNED NULL,
  task_id     INT UNSIGNED NULL,
  role_id     INT UNSIGNED NULL,
  is_accepted TINYINT(1)   NULL DEFAULT 0,
  PRIMARY KEY (id),
  KEY idx_assigments_user_accepted (user_id, is_accepted),
  KEY idx_assigments_lookup (user_id, project_id, item_id, task_id),
  CONSTRAINT fk_assigments_user FOREIGN KEY (user_id)
    REFERENCES users (id),
  CONSTRAINT fk_assigments_project FOREIGN KEY (project_id)
    REFERENCES projects (id),
  CONSTRAINT fk_assigments_item FOREIGN KEY (item_id)
    REFERENCES items (id),
  CONSTRAINT fk_assigments_task FOREIGN KEY (task_id)
    REFERENCES tasks (id),
  CONSTRAINT fk_assigments_role FOREIGN KEY (role_id)
    REFERENCES ref_project_roles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
