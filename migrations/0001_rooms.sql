CREATE TABLE `messages` (
	`id` integer PRIMARY KEY NOT NULL,
	`room_id` integer NOT NULL,
	`seq` integer NOT NULL,
	`user_id` integer NOT NULL,
	`body` text NOT NULL,
	`nonce` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`room_id`) REFERENCES `rooms`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `messages_room_seq` ON `messages` (`room_id`,`seq`);--> statement-breakpoint
CREATE UNIQUE INDEX `messages_room_user_nonce` ON `messages` (`room_id`,`user_id`,`nonce`) WHERE "messages"."nonce" IS NOT NULL;--> statement-breakpoint
CREATE TABLE `rooms` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`latest_seq` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `rooms_name` ON `rooms` (`name`);