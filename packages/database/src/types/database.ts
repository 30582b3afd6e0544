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
      usage_events: {
        Row: {
          action: string
          created_at: string
          id: string
          idempotency_key: string | null
          metadata: Json
          module_id: string | null
          personal_user_id: string | null
          tenant_id: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number | null
          user_id: string | null
        }
        Insert: {
          action: string
          created_at?: string
          id?: string
          idempotency_key?: string | null
          metadata?: Json
          module_id?: string | null
          personal_user_id?: string | null
          tenant_id?: string | null
          tokens_input?: number
          tokens_output?: number
          tokens_total?: number | null
          user_id?: string | null
        }
        Update: {
          action?: string
          created_at?: string
          id?: string
          idempotency_key?: string | null
          metadata?: Json
          module_id?: string | null
          personal_user_id?: string | null
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
      usage_rollup_daily: {
        Row: {
          action: string
          day: string
          events: number
          id: number
          module_id: string
          tenant_id: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id: string | null
        }
        Insert: {
          action: string
          day: string
          events: number
          id?: never
          module_id: string
          tenant_id?: string | null
          tokens_input: number
          tokens_output: number
          tokens_total: number
          user_id?: string | null
        }
        Update: {
          action?: string
          day?: string
          events?: number
          id?: never
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
          events: number
          id: number
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
          events: number
          id?: never
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
          events?: number
          id?: never
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
          events: number
          id: number
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
          events: number
          id?: never
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
          events?: number
          id?: never
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
          day: string
          events: number
          id: number
          module_id: string
          tenant_id: string
          tokens_input: number
          tokens_output: number
          tokens_total: number
        }
        Insert: {
          action: string
          day: string
          events: number
          id?: never
          module_id: string
          tenant_id: string
          tokens_input: number
          tokens_output: number
          tokens_total: number
        }
        Update: {
          action?: string
          day?: string
          events?: number
          id?: never
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
      [_ in never]: never
    }
    Functions: {
      [_ in never]: never
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
