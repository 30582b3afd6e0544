export type Json =
  | string
  | number
  | boolean
  | null
  | { [key: string]: Json | undefined }
  | Json[]

export type Database = {
  public: {
    Tables: {
      tenant_members: {
        Row: {
          created_at: string
          role: string
          tenant_id: string
          user_id: string
        }
        Insert: {
          created_at?: string
          role?: string
          tenant_id: string
          user_id: string
        }
        Update: {
          created_at?: string
          role?: string
          tenant_id?: string
          user_id?: string
        }
        Relationships: [
          {
            foreignKeyName: "tenant_members_tenant_id_fkey"
            columns: ["tenant_id"]
            isOneToOne: false
            referencedRelation: "tenants"
            referencedColumns: ["id"]
          },
        ]
      }
      tenants: {
        Row: {
          created_at: string
          id: string
          name: string
          slug: string
        }
        Insert: {
          created_at?: string
          id?: string
          name: string
          slug: string
        }
        Update: {
          created_at?: string
          id?: string
          name?: string
          slug?: string
        }
        Relationships: []
      }
      usage_budget_alerts: {
        Row: {
          budget_id: string
          fired_at: string
          id: number
          threshold: number
          usage_limit: number
          used: number
          window_start: string
        }
        Insert: {
          budget_id: string
          fired_at?: string
          id?: never
          threshold: number
          usage_limit: number
          used: number
          window_start: string
        }
        Update: {
          budget_id?: string
          fired_at?: string
          id?: never
          threshold?: number
          usage_limit?: number
          used?: number
          window_start?: string
        }
        Relationships: [
          {
            foreignKeyName: "usage_budget_alerts_budget_id_fkey"
            columns: ["budget_id"]
            isOneToOne: false
            referencedRelation: "usage_budget_status"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "usage_budget_alerts_budget_id_fkey"
            columns: ["budget_id"]
            isOneToOne: false
            referencedRelation: "usage_budgets"
            referencedColumns: ["id"]
          },
        ]
      }
      usage_budget_counters: {
        Row: {
          budget_id: string
          used: number
          window_end: string
          window_start: string
        }
        Insert: {
          budget_id: string
          used: number
          window_end: string
          window_start: string
        }
        Update: {
          budget_id?: string
          used?: number
          window_end?: string
          window_start?: string
        }
        Relationships: [
          {
            foreignKeyName: "usage_budget_counters_budget_id_fkey"
            columns: ["budget_id"]
            isOneToOne: false
            referencedRelation: "usage_budget_status"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "usage_budget_counters_budget_id_fkey"
            columns: ["budget_id"]
            isOneToOne: false
            referencedRelation: "usage_budgets"
            referencedColumns: ["id"]
          },
        ]
      }
      usage_budgets: {
        Row: {
          action_like: string | null
          action_pattern: string | null
          created_at: string
          currency: string | null
          id: string
          metric: string
          mode: string
          period: string
          tenant_id: string | null
          thresholds: number[]
          time_zone: string
          usage_limit: number
          user_id: string | null
        }
        Insert: {
          action_like?: string | null
          action_pattern?: string | null
          created_at?: string
          currency?: string | null
          id?: string
          metric: string
          mode: string
          period: string
          tenant_id?: string | null
          thresholds?: number[]
          time_zone?: string
          usage_limit: number
          user_id?: string | null
        }
        Update: {
          action_like?: string | null
          action_pattern?: string | null
          created_at?: string
          currency?: string | null
          id?: string
          metric?: string
          mode?: string
          period?: string
          tenant_id?: string | null
          thresholds?: number[]
          time_zone?: string
          usage_limit?: number
          user_id?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "usage_budgets_tenant_id_fkey"
            columns: ["tenant_id"]
            isOneToOne: false
            referencedRelation: "tenants"
            referencedColumns: ["id"]
          },
        ]
      }
      usage_closed_periods: {
        Row: {
          closed_at: string
          id: number
          period_end: string
          period_start: string
          statement: Json
          tenant_id: string | null
          time_zone: string
          user_id: string | null
        }
        Insert: {
          closed_at?: string
          id?: never
          period_end: string
          period_start: string
          statement: Json
          tenant_id?: string | null
          time_zone: string
          user_id?: string | null
        }
        Update: {
          closed_at?: string
          id?: never
          period_end?: string
          period_start?: string
          statement?: Json
          tenant_id?: string | null
          time_zone?: string
          user_id?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "usage_closed_periods_tenant_id_fkey"
            columns: ["tenant_id"]
            isOneToOne: false
            referencedRelation: "tenants"
            referencedColumns: ["id"]
          },
        ]
      }
      usage_events: {
        Row: {
          action: string
          correction_kind: string | null
          correction_reason: string | null
          corrects_event_id: string | null
          cost: number
          created_at: string
          event_count: number | null
          id: string
          idempotency_key: string | null
          metadata: Json
          model: string | null
          module_id: string | null
          occurred_at: string | null
          personal_user_id: string | null
          recorded_at: string | null
          tenant_id: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number | null
          user_id: string | null
        }
        Insert: {
          action: string
          correction_kind?: string | null
          correction_reason?: string | null
          corrects_event_id?: string | null
          cost?: number
          created_at?: string
          event_count?: number | null
          id?: string
          idempotency_key?: string | null
          metadata?: Json
          model?: string | null
          module_id?: string | null
          occurred_at?: string | null
          personal_user_id?: string | null
          recorded_at?: string | null
          tenant_id?: string | null
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number | null
          user_id?: string | null
        }
        Update: {
          action?: string
          correction_kind?: string | null
          correction_reason?: string | null
          corrects_event_id?: string | null
          cost?: number
          created_at?: string
          event_count?: number | null
          id?: string
          idempotency_key?: string | null
          metadata?: Json
          model?: string | null
          module_id?: string | null
          occurred_at?: string | null
          personal_user_id?: string | null
          recorded_at?: string | null
          tenant_id?: string | null
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number | null
          user_id?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "usage_events_tenant_id_fkey"
            columns: ["tenant_id"]
            isOneToOne: false
            referencedRelation: "tenants"
            referencedColumns: ["id"]
          },
        ]
      }
      usage_prices: {
        Row: {
          action: string | null
          cache_write_per_million: number | null
          cached_input_per_million: number | null
          created_at: string
          currency: string
          effective_from: string
          id: number
          input_per_million: number | null
          model: string | null
          output_per_million: number | null
          per_event: number | null
          tenant_id: string | null
        }
        Insert: {
          action?: string | null
          cache_write_per_million?: number | null
          cached_input_per_million?: number | null
          created_at?: string
          currency: string
          effective_from: string
          id?: never
          input_per_million?: number | null
          model?: string | null
          output_per_million?: number | null
          per_event?: number | null
          tenant_id?: string | null
        }
        Update: {
          action?: string | null
          cache_write_per_million?: number | null
          cached_input_per_million?: number | null
          created_at?: string
          currency?: string
          effective_from?: string
          id?: never
          input_per_million?: number | null
          model?: string | null
          output_per_million?: number | null
          per_event?: number | null
          tenant_id?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "usage_prices_tenant_id_fkey"
            columns: ["tenant_id"]
            isOneToOne: false
            referencedRelation: "tenants"
            referencedColumns: ["id"]
          },
        ]
      }
      usage_rollup_daily: {
        Row: {
          action: string
          cost: number
          day: string
          events: number
          id: number
          model: string | null
          module_id: string
          tenant_id: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id: string | null
        }
        Insert: {
          action: string
          cost?: number
          day: string
          events: number
          id?: never
          model?: string | null
          module_id: string
          tenant_id?: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id?: string | null
        }
        Update: {
          action?: string
          cost?: number
          day?: string
          events?: number
          id?: never
          model?: string | null
          module_id?: string
          tenant_id?: string | null
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number
          user_id?: string | null
        }
        Relationships: []
      }
      usage_rollup_deltas: {
        Row: {
          action: string
          bucket: string
          cost: number
          events: number
          id: number
          model: string | null
          module_id: string
          tenant_id: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id: string | null
        }
        Insert: {
          action: string
          bucket: string
          cost?: number
          events: number
          id?: never
          model?: string | null
          module_id: string
          tenant_id?: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id?: string | null
        }
        Update: {
          action?: string
          bucket?: string
          cost?: number
          events?: number
          id?: never
          model?: string | null
          module_id?: string
          tenant_id?: string | null
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number
          user_id?: string | null
        }
        Relationships: []
      }
      usage_rollup_hourly: {
        Row: {
          action: string
          bucket: string
          cost: number
          events: number
          id: number
          model: string | null
          module_id: string
          tenant_id: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id: string | null
        }
        Insert: {
          action: string
          bucket: string
          cost?: number
          events: number
          id?: never
          model?: string | null
          module_id: string
          tenant_id?: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id?: string | null
        }
        Update: {
          action?: string
          bucket?: string
          cost?: number
          events?: number
          id?: never
          model?: string | null
          module_id?: string
          tenant_id?: string | null
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number
          user_id?: string | null
        }
        Relationships: []
      }
      usage_rollup_tenant_daily: {
        Row: {
          action: string
          cost: number
          day: string
          events: number
          id: number
          model: string | null
          module_id: string
          tenant_id: string
          tokens_input: number
          tokens_output: number
          tokens_total: number
        }
        Insert: {
          action: string
          cost?: number
          day: string
          events: number
          id?: never
          model?: string | null
          module_id: string
          tenant_id: string
          tokens_input: number
          tokens_output: number
          tokens_total: number
        }
        Update: {
          action?: string
          cost?: number
          day?: string
          events?: number
          id?: never
          model?: string | null
          module_id?: string
          tenant_id?: string
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number
        }
        Relationships: []
      }
    }
    Views: {
      usage_budget_status: {
        Row: {
          action_pattern: string | null
          currency: string | null
          id: string | null
          metric: string | null
          mode: string | null
          period: string | null
          remaining: number | null
          tenant_id: string | null
          thresholds: number[] | null
          time_zone: string | null
          usage_limit: number | null
          used: number | null
          user_id: string | null
          window_end: string | null
          window_start: string | null
        }
        Relationships: [
          {
            foreignKeyName: "usage_budgets_tenant_id_fkey"
            columns: ["tenant_id"]
            isOneToOne: false
            referencedRelation: "tenants"
            referencedColumns: ["id"]
          },
        ]
      }
    }
    Functions: {
      amend_usage_event_v1: {
        Args: {
          event_id: string
          reason: string
          tokens_input: number
          tokens_output: number
        }
        Returns: string
      }
      check_usage_quota_v1: {
        Args: {
          action: string
          cost?: number
          events?: number
          tenant_id: string
          tokens?: number
          user_id: string
        }
        Returns: {
          allowed: boolean
          budget_id: string
          metric: string
          mode: string
          remaining: number
          requested: number
          usage_limit: number
          used: number
          window_end: string
          window_start: string
        }[]
      }
      usage_archived_months_v1: {
        Args: never
        Returns: {
          archived: boolean
          month_end: string
          month_start: string
        }[]
      }
      void_usage_event_v1: {
        Args: { event_id: string; reason: string }
        Returns: string
      }
    }
    Enums: {
      [_ in never]: never
    }
    CompositeTypes: {
      [_ in never]: never
    }
  }
}

type DatabaseWithoutInternals = Omit<Database, "__InternalSupabase">

type DefaultSchema = DatabaseWithoutInternals[Extract<keyof Database, "public">]

export type Tables<
  DefaultSchemaTableNameOrOptions extends
    | keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
        DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])
    : never = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
      DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])[TableName] extends {
      Row: infer R
    }
    ? R
    : never
  : DefaultSchemaTableNameOrOptions extends keyof (DefaultSchema["Tables"] &
        DefaultSchema["Views"])
    ? (DefaultSchema["Tables"] &
        DefaultSchema["Views"])[DefaultSchemaTableNameOrOptions] extends {
        Row: infer R
      }
      ? R
      : never
    : never

export type TablesInsert<
  DefaultSchemaTableNameOrOptions extends
    | keyof DefaultSchema["Tables"]
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Insert: infer I
    }
    ? I
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends {
        Insert: infer I
      }
      ? I
      : never
    : never

export type TablesUpdate<
  DefaultSchemaTableNameOrOptions extends
    | keyof DefaultSchema["Tables"]
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Update: infer U
    }
    ? U
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends {
        Update: infer U
      }
      ? U
      : never
    : never

export type Enums<
  DefaultSchemaEnumNameOrOptions extends
    | keyof DefaultSchema["Enums"]
    | { schema: keyof DatabaseWithoutInternals },
  EnumName extends DefaultSchemaEnumNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"]
    : never = never,
> = DefaultSchemaEnumNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"][EnumName]
  : DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"]
    ? DefaultSchema["Enums"][DefaultSchemaEnumNameOrOptions]
    : never

export type CompositeTypes<
  PublicCompositeTypeNameOrOptions extends
    | keyof DefaultSchema["CompositeTypes"]
    | { schema: keyof DatabaseWithoutInternals },
  CompositeTypeName extends PublicCompositeTypeNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[PublicCompositeTypeNameOrOptions["schema"]]["CompositeTypes"]
    : never = never,
> = PublicCompositeTypeNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[PublicCompositeTypeNameOrOptions["schema"]]["CompositeTypes"][CompositeTypeName]
  : PublicCompositeTypeNameOrOptions extends keyof DefaultSchema["CompositeTypes"]
    ? DefaultSchema["CompositeTypes"][PublicCompositeTypeNameOrOptions]
    : never

export const Constants = {
  public: {
    Enums: {},
  },
} as const
